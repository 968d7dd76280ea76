"""Images decoded and preprocessed once, then fed to a model many times (the in-training evaluator).

Memory: each image is stored as the model sees it, C x H x W values: at 224 px that is 602 KB in
``float32``, 301 KB in ``float16`` (inputs rounded to half precision) and 151 KB in ``uint8``
(lossless: the preprocessing up to ``ToTensor`` runs once, and ``ToTensor``'s division and
``Normalize`` run on each batch, bit for bit as the full preprocessing does). 10,000 images at
224 px take 6.0, 3.0 or 1.5 GB. With a ``storage_dir`` the arrays are memory-mapped files there
instead, and the operating system pages them in per batch.
"""

from __future__ import annotations

import logging
import typing
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from evalbench.errors import EvalbenchError
from evalbench.features import Preprocessed

log = logging.getLogger(__name__)

Storage = Literal["float32", "float16", "uint8"]
STORAGES: tuple[str, ...] = typing.get_args(Storage)


def split_normalize(preprocess):
    """``(to_pixels, mean, std)`` for a torchvision ``Compose`` that ends in ``ToTensor`` (or
    open_clip's ``MaybeToTensor``) and ``Normalize``: ``to_pixels`` runs the transforms before
    them (resize, crop, RGB) and returns a PIL image. EvalbenchError for any other preprocessing."""
    steps = getattr(preprocess, "transforms", None)
    if (
        not isinstance(steps, (list, tuple)) or len(steps) < 2
        or type(steps[-1]).__name__ != "Normalize" or "ToTensor" not in type(steps[-2]).__name__
    ):
        raise EvalbenchError("storage: uint8 needs a torchvision Compose ending in ToTensor and Normalize "
                             "(as open_clip's preprocess is); use storage='float16' for this preprocess")
    from torchvision.transforms import Compose

    return Compose(list(steps[:-2])), steps[-1].mean, steps[-1].std


class _AsUint8:
    """PIL image -> uint8 C x H x W tensor, what ``ToTensor`` sees before it divides by 255."""

    def __init__(self, to_pixels):
        self.to_pixels = to_pixels

    def __call__(self, image) -> torch.Tensor:
        array = np.asarray(self.to_pixels(image))
        if array.dtype != np.uint8:
            raise ValueError(f"storage uint8: the preprocessed image is {array.dtype}, not 8-bit")
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class PreparedImages:
    """This process's share of a split's images, preprocessed once and stored in ``storage``
    (in memory, or memory-mapped under ``path`` when given). :meth:`batch` returns float32
    model inputs; positions past the share are filled with a blank image (padding, so that every
    rank of a distributed job runs the same number of batches). ``bad`` lists the positions of
    images that could not be decoded (only with ``on_bad_image="skip"``).
    """

    def __init__(self, dataset: Dataset, preprocess, storage: str = "float32", path: Path | None = None,
                 batch_size: int = 64, workers: int = 0, desc: str = "images", progress: bool = True,
                 on_bad_image: str = "error"):
        self.storage = storage
        self.mean = self.std = None
        if storage == "uint8":
            to_pixels, self.mean, self.std = split_normalize(preprocess)
            preprocess = _AsUint8(to_pixels)
        source = Preprocessed(dataset, preprocess)
        dtype = np.dtype(storage)
        self.blank = source.blank.numpy().astype(dtype)
        shape = (len(dataset), *self.blank.shape)
        if path is None:
            self.array = np.empty(shape, dtype=dtype)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        bad = []
        loader = DataLoader(source, batch_size=batch_size, num_workers=workers)
        position = 0
        with tqdm(total=len(dataset), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for pixels, errors in loader:
                if tuple(pixels.shape[1:]) != self.blank.shape:
                    raise EvalbenchError(f"{desc}: preprocess gives images of shape {tuple(pixels.shape[1:])} and "
                                         f"{self.blank.shape}; it must give one size (resize and crop)")
                for i, error in enumerate(errors):
                    if error:
                        if on_bad_image == "error":
                            raise EvalbenchError(f"{error}; pass on_bad_image='skip' to leave such images out")
                        bad.append(position + i)
                self.array[position : position + len(pixels)] = pixels.numpy().astype(dtype, copy=False)
                position += len(pixels)
                bar.update(len(pixels))
        self.bad = np.asarray(bad, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.array)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Model inputs (float32) for positions ``start:stop``; positions past the end are blank."""
        have = self.array[start:stop]
        if len(have) < stop - start:
            pad = np.broadcast_to(self.blank, (stop - start - len(have), *self.blank.shape))
            have = np.concatenate([have, pad])
        pixels = torch.from_numpy(np.ascontiguousarray(have))
        if self.storage != "uint8":
            return pixels.float()
        from torchvision.transforms.functional import normalize

        # As ToTensor then Normalize compute it, so the inputs equal the full preprocessing's.
        return normalize(pixels.float().div(255), self.mean, self.std)
