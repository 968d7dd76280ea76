"""Image feature extraction: one pass over each split, shared by every mode, cached in shards."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from evalbench.cache import FeatureEntry
from evalbench.errors import EvalbenchError
from evalbench.models.base import ModelAdapter

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "amp")


class Preprocessed(Dataset):
    """Applies the model's preprocessing in DataLoader workers; yields ``(tensor, error)``.

    An image that cannot be read or decoded yields a blank tensor and a one-line description of
    the problem, so the main process decides what to do (stop, or leave the image out).
    """

    def __init__(self, dataset: Dataset, preprocess):
        self.dataset, self.preprocess = dataset, preprocess
        self.blank = preprocess(Image.new("RGB", (8, 8)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return self.preprocess(self.dataset[i]), ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            describe = getattr(self.dataset, "describe", lambda i: f"sample {i}")
            return self.blank, f"{describe(i)}: cannot decode image ({type(e).__name__}: {e})"


def autocast(device: torch.device, precision: str):
    """bf16 (or fp16 where bf16 is unsupported) autocast on CUDA for ``amp``; nothing otherwise."""
    if precision == "amp" and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class Encoder:
    """Encodes batches, halving the chunk size on CUDA out-of-memory and retrying."""

    def __init__(self, model: ModelAdapter, precision: str = "fp32"):
        self.model, self.precision = model, precision
        self.chunk: int | None = None

    def __call__(self, pixels: torch.Tensor) -> np.ndarray:
        chunk = self.chunk or len(pixels)
        while True:
            try:
                with autocast(self.model.device, self.precision):
                    parts = [self.model.encode_images(pixels[i : i + chunk]) for i in range(0, len(pixels), chunk)]
                return torch.cat(parts).float().cpu().numpy()
            except torch.OutOfMemoryError:
                if chunk == 1:
                    raise
                chunk = max(1, chunk // 2)
                self.chunk = chunk
                torch.cuda.empty_cache()
                log.warning("out of memory: encoding in chunks of %d images", chunk)


@torch.inference_mode()
def extract_features(
    model: ModelAdapter,
    dataset: Dataset,
    batch_size: int = 64,
    workers: int = 0,
    desc: str = "features",
    progress: bool = True,
    entry: FeatureEntry | None = None,
    precision: str = "fp32",
    on_bad_image: str = "error",
) -> np.ndarray:
    """Encode every image of ``dataset`` (which yields PIL images); return float32 (n, dim).

    With a cache ``entry``, features are written shard by shard as they complete, shards already
    on disk are not recomputed, and the entry is marked complete at the end. An undecodable image
    raises EvalbenchError naming it, or with ``on_bad_image="skip"`` gets a row of NaN (which the
    runners leave out and count).
    """
    n = len(dataset)
    if entry is not None and entry.complete():
        return entry.load(n)
    shard_size = entry.shard_size if entry is not None else max(n, 1)
    n_shards = (n + shard_size - 1) // shard_size
    todo = [i for i in range(n_shards) if entry is None or not entry.has_shard(i)]
    rows = [r for i in todo for r in range(i * shard_size, min(n, (i + 1) * shard_size))]
    if entry is not None:
        entry.begin(n)
        if len(todo) < n_shards:
            log.info("%s: resuming, %d of %d shards cached", desc, n_shards - len(todo), n_shards)
    loader = DataLoader(
        Subset(Preprocessed(dataset, model.preprocess), rows),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=model.device.type == "cuda",
    )
    encode = Encoder(model, precision)
    in_memory: dict[int, np.ndarray] = {}
    buffer: list[np.ndarray] = []
    shard_iter = iter(todo)
    current = next(shard_iter, None)
    with tqdm(total=n, initial=n - len(rows), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for pixels, errors in loader:
            encoded = encode(pixels)
            bad = [i for i, e in enumerate(errors) if e]
            if bad and on_bad_image == "error":
                raise EvalbenchError(f"{errors[bad[0]]}; pass --on-bad-image skip to leave such images out")
            encoded[bad] = np.nan
            buffer.append(encoded)
            bar.update(len(pixels))
            # Flush every shard the buffer now covers.
            while current is not None:
                want = min(n, (current + 1) * shard_size) - current * shard_size
                have = sum(len(b) for b in buffer)
                if have < want:
                    break
                merged = np.concatenate(buffer)
                shard, rest = merged[:want], merged[want:]
                buffer = [rest] if len(rest) else []
                if entry is not None:
                    entry.write_shard(current, shard)
                else:
                    in_memory[current] = shard
                current = next(shard_iter, None)
    if entry is None:
        return np.concatenate([in_memory[i] for i in range(n_shards)]).astype(np.float32, copy=False)
    dim = np.load(entry.shard_path(0), mmap_mode="r").shape[1]
    entry.finish(n, dim)
    return entry.load(n)
