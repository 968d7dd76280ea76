"""Image feature extraction: one pass over each split, shared by every mode, cached in shards."""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import types
from dataclasses import dataclass

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


def preprocess_key(preprocess, _depth: int = 0) -> str | None:
    """A description of every setting of an image transform (a torchvision ``Compose`` and what it
    holds, an image processor's attributes), equal for two transforms exactly when they turn an
    image into the same tensor; None when some part cannot be described (a lambda, a closure, an
    object without attributes), and such a transform shares its decoding with nothing.

    ``repr`` is not enough: a transform class may print only some of its settings, so the key is
    built from the objects' attributes (mean, std, size, interpolation, ...) instead.
    """
    if _depth > 6:
        return None
    if preprocess is None or isinstance(preprocess, (bool, int, float, str, bytes)):
        return repr(preprocess)
    if isinstance(preprocess, enum.Enum):
        return f"{type(preprocess).__qualname__}.{preprocess.name}"
    if isinstance(preprocess, torch.Tensor):
        return f"tensor{tuple(preprocess.shape)}{preprocess.detach().cpu().flatten().tolist()}"
    if isinstance(preprocess, np.ndarray):
        return f"array{preprocess.shape}{preprocess.flatten().tolist()}"
    if isinstance(preprocess, (list, tuple)):
        parts = [preprocess_key(p, _depth + 1) for p in preprocess]
        return None if None in parts else f"[{', '.join(parts)}]"
    if isinstance(preprocess, dict):
        parts = {str(k): preprocess_key(v, _depth + 1) for k, v in sorted(preprocess.items(), key=lambda kv: str(kv[0]))}
        return None if None in parts.values() else "{" + ", ".join(f"{k}: {v}" for k, v in parts.items()) + "}"
    if isinstance(preprocess, (types.FunctionType, types.BuiltinFunctionType, type)):
        name = f"{getattr(preprocess, '__module__', '')}.{preprocess.__qualname__}"
        closure = getattr(preprocess, "__closure__", None)
        return None if "<lambda>" in name or "<locals>" in name or closure else name
    if isinstance(preprocess, functools.partial):
        return preprocess_key([preprocess.func, preprocess.args, preprocess.keywords], _depth + 1)
    attributes = getattr(preprocess, "__dict__", None)
    if attributes is None:
        return None
    # nn.Module-based transforms keep hooks and the training flag beside their settings.
    settings = {k: v for k, v in attributes.items() if not k.startswith("_") and k != "training"}
    inner = preprocess_key(settings, _depth + 1)
    return None if inner is None else f"{type(preprocess).__module__}.{type(preprocess).__qualname__}{inner}"


@dataclass
class FeatureJob:
    """One model of a shared pass and the cache entry its features go to (None: kept in memory)."""

    model: ModelAdapter
    entry: FeatureEntry | None = None


@torch.inference_mode()
def extract_features(model: ModelAdapter, dataset: Dataset, entry: FeatureEntry | None = None,
                     **options) -> np.ndarray | None:
    """Encode every image of ``dataset`` (which yields PIL images) with ``model``; return float32
    (n, dim). ``options`` are those of :func:`extract_shared`, which this is with one job."""
    return extract_shared([FeatureJob(model, entry)], dataset, **options)[0]


class _ShardWriter:
    """One job's encoded rows, cut into the shards this rank owns as they fill up: each shard is
    written to the entry (rank 0) or held (other ranks, and without an entry)."""

    def __init__(self, job: FeatureJob, mine: list[int], n: int, shard_size: int):
        self.job, self.n, self.shard_size = job, n, shard_size
        self.shards = iter(mine)
        self.current = next(self.shards, None)
        self.buffer: list[np.ndarray] = []
        self.held: dict[int, np.ndarray] = {}

    def add(self, encoded: np.ndarray) -> None:
        self.buffer.append(encoded)
        while self.current is not None:
            want = min(self.n, (self.current + 1) * self.shard_size) - self.current * self.shard_size
            if sum(len(b) for b in self.buffer) < want:
                break
            merged = np.concatenate(self.buffer)
            self.buffer = [merged[want:]] if len(merged) > want else []
            self.store(self.current, merged[:want])
            self.current = next(self.shards, None)

    def store(self, shard: int, features: np.ndarray) -> None:
        entry = self.job.entry
        if entry is not None and distributed.is_main():
            if not entry.has_shard(shard):  # a resumed entry keeps the shards it has
                entry.write_shard(shard, features)
        else:
            self.held[shard] = features


@torch.inference_mode()
def extract_shared(
    jobs: list[FeatureJob],
    dataset: Dataset,
    batch_size: int = 64,
    workers: int = 0,
    desc: str = "features",
    progress: bool = True,
    precision: str = "fp32",
    on_bad_image: str = "error",
    shard_size: int = 4096,
) -> list[np.ndarray | None]:
    """Encode every image of ``dataset`` (which yields PIL images) with each job's model, reading
    and preprocessing each image once; return float32 (n, dim) per job.

    Every model must have the same preprocessing (the first one's is applied; see
    :func:`preprocess_key`) and device. Each batch is decoded once, then encoded by each model in
    turn, so every model is in memory during the pass: the measured choice against decoding once
    into a buffer and encoding one model at a time (as fast or faster, see BENCHMARKS.md,
    "Checkpoint sweeps"). Memory: the models (``evalbench.cohort`` bounds their weights), one
    batch of pixels, and per model the rows of one unfinished shard.

    Rows are encoded in shards. With a cache entry, each shard is written as it completes,
    shards already on disk are not recomputed (a shard missing from any job's entry is encoded
    for all, and written where it is missing), and the entry is marked complete at the end.
    Under torchrun the missing shards are dealt out to the ranks and gathered on rank 0; the other
    ranks return None. An undecodable image raises EvalbenchError naming it, or with
    ``on_bad_image="skip"`` gets a row of NaN (which the runners leave out and count).
    """
    n = len(dataset)
    entries = [job.entry for job in jobs if job.entry is not None]
    if entries:
        shard_size = entries[0].shard_size
        if any(e.shard_size != shard_size for e in entries):
            raise ValueError("extract_shared: the entries of one pass must have the same shard size")
    n_shards = (n + shard_size - 1) // shard_size
    todo = distributed.broadcast([i for i in range(n_shards)
                                  if len(entries) < len(jobs) or not all(e.has_shard(i) for e in entries)])
    mine = todo[distributed.rank() :: distributed.world_size()]
    rows = [r for i in mine for r in range(i * shard_size, min(n, (i + 1) * shard_size))]
    if distributed.is_main():
        for entry in entries:
            entry.begin(n)
        if len(todo) < n_shards:
            log.info("%s: resuming, %d of %d shards cached", desc, n_shards - len(todo), n_shards)
    first = jobs[0].model
    loader = DataLoader(
        Subset(Preprocessed(dataset, first.preprocess), rows),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=first.device.type == "cuda",
    )
    encoders = [Encoder(job.model, precision) for job in jobs]
    writers = [_ShardWriter(job, mine, n, shard_size) for job in jobs]
    label = desc if len(jobs) == 1 else f"{desc} ({len(jobs)} models)"
    with tqdm(total=len(rows), desc=label, unit="img", disable=not progress, leave=False) as bar:
        for pixels, errors in loader:
            bad = [i for i, e in enumerate(errors) if e]
            if bad and on_bad_image == "error":
                raise EvalbenchError(f"{errors[bad[0]]}; pass --on-bad-image skip to leave such images out")
            for encode, writer in zip(encoders, writers):
                encoded = encode(pixels)
                encoded[bad] = np.nan
                writer.add(encoded)
            bar.update(len(pixels))
    gathered = distributed.gather([w.held for w in writers])
    if not distributed.is_main():
        return [None] * len(jobs)
    return [_assemble(job, [part[j] for part in gathered], n, shard_size) for j, job in enumerate(jobs)]


def _assemble(job: FeatureJob, parts: list[dict[int, np.ndarray]], n: int, shard_size: int) -> np.ndarray:
    """Rank 0: one job's shards from every rank into its entry (then read back whole), or into
    one array without an entry."""
    entry, out = job.entry, None
    for part in parts:
        for shard, features in part.items():
            if entry is not None:
                if not entry.has_shard(shard):
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
