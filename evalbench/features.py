"""Image feature extraction: one pass over each split, shared by every mode, cached in shards."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from evalbench import distributed
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
    shard_size: int = 4096,
) -> np.ndarray | None:
    """Encode every image of ``dataset`` (which yields PIL images); return float32 (n, dim).

    Rows are encoded in shards. With a cache ``entry``, each shard is written as it completes,
    shards already on disk are not recomputed, and the entry is marked complete at the end. Under
    torchrun the missing shards are dealt out to the ranks and gathered on rank 0; the other
    ranks return None. An undecodable image raises EvalbenchError naming it, or with
    ``on_bad_image="skip"`` gets a row of NaN (which the runners leave out and count).
    """
    n = len(dataset)
    if entry is not None:
        shard_size = entry.shard_size
    n_shards = (n + shard_size - 1) // shard_size
    todo = distributed.broadcast([i for i in range(n_shards) if entry is None or not entry.has_shard(i)])
    mine = todo[distributed.rank() :: distributed.world_size()]
    rows = [r for i in mine for r in range(i * shard_size, min(n, (i + 1) * shard_size))]
    if entry is not None and distributed.is_main():
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
    out: np.ndarray | None = None  # rank 0's result, filled shard by shard: one copy in memory
    held: dict[int, np.ndarray] = {}  # shards this rank keeps for rank 0 (or for itself, uncached)

    def store(shard: int, features: np.ndarray) -> None:
        if entry is not None and distributed.is_main():
            entry.write_shard(shard, features)
        else:
            held[shard] = features

    buffer: list[np.ndarray] = []
    shard_iter = iter(mine)
    current = next(shard_iter, None)
    with tqdm(total=len(rows), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for pixels, errors in loader:
            encoded = encode(pixels)
            bad = [i for i, e in enumerate(errors) if e]
            if bad and on_bad_image == "error":
                raise EvalbenchError(f"{errors[bad[0]]}; pass --on-bad-image skip to leave such images out")
            encoded[bad] = np.nan
            buffer.append(encoded)
            bar.update(len(pixels))
            # Store every shard the buffer now covers.
            while current is not None:
                want = min(n, (current + 1) * shard_size) - current * shard_size
                if sum(len(b) for b in buffer) < want:
                    break
                merged = np.concatenate(buffer)
                buffer = [merged[want:]] if len(merged) > want else []
                store(current, merged[:want])
                current = next(shard_iter, None)
    gathered = distributed.gather(held)
    if not distributed.is_main():
        return None
    for part in gathered:
        for shard, features in part.items():
            if entry is not None:
                entry.write_shard(shard, features)
            else:
                if out is None:
                    out = np.empty((n, features.shape[1]), dtype=np.float32)
                out[shard * shard_size : shard * shard_size + len(features)] = features
    if entry is None:
        return out
    dim = np.load(entry.shard_path(0), mmap_mode="r").shape[1]
    entry.finish(n, dim)
    return entry.load(n)
