"""The models of one run that read the same task data, so that each image is decoded once.

``evalbench run --model a --model b ...`` evaluates model by model, one loaded at a time. When a
model encodes a split and later models of the run want the same task results (hence the same
split rows), the preprocessed images of that pass are kept in a :class:`PixelBuffer` in the
cache's ``tmp/``; a later model whose preprocessing is identical (:func:`preprocess_key`: the
same transform settings) reads them instead of decoding the images again. Models with other
preprocessing decode on their own turn (and leave a buffer for the models after them). Chosen
by measurement over encoding each batch with every model in one pass (BENCHMARKS.md,
"Checkpoint sweeps"): as fast or faster on 2 cores, and only one model's weights in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from PIL import Image

from evalbench import distributed
from evalbench.features import PixelBuffer
from evalbench.models import LazyModel

log = logging.getLogger(__name__)


class Cohort:
    """Which models of a run still want which task's results, in the run's order, and the pixel
    buffers their passes leave for each other.

    ``want(model, task, keys)`` records a model's pending result keys for a task (computed on
    rank 0 before anything runs); ``after(model, task)`` gives the later models with the same
    keys; ``buffers`` the preprocessed rows of the splits decoded so far, by data and
    preprocessing (:meth:`new_buffer`).
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.order: list[LazyModel] = []
        self.keys: dict[tuple[int, str], frozenset[str]] = {}
        self.buffers: dict[str, PixelBuffer] = {}

    def want(self, model: LazyModel, task: str, keys: list[str]) -> None:
        if model not in self.order:
            self.order.append(model)
        if keys:
            self.keys[(id(model), task)] = frozenset(keys)

    def after(self, model: LazyModel, task: str) -> list[LazyModel]:
        mine = self.keys.get((id(model), task))
        if mine is None or model not in self.order:
            return []
        later = self.order[self.order.index(model) + 1 :]
        return [m for m in later if self.keys.get((id(m), task)) == mine]

    def new_buffer(self, key: str, n: int, preprocess) -> PixelBuffer | None:
        """An empty buffer for ``n`` rows of what ``preprocess`` makes, filed under ``key``; None
        when it would take more than half the free disk space of the cache (then every model
        decodes for itself). One file per process, so torchrun ranks on one machine keep apart."""
        size = n * preprocess(Image.new("RGB", (8, 8))).numel() * 4
        self.tmp.mkdir(parents=True, exist_ok=True)
        if size > shutil.disk_usage(self.tmp).free // 2:
            return None
        name = hashlib.sha256(key.encode()).hexdigest()[:20]
        path = self.tmp / f"pixels-{os.getpid()}-r{distributed.rank()}-{name}.npy"
        self.buffers[key] = PixelBuffer(path, n)
        return self.buffers[key]

    def drop(self, buffer: PixelBuffer) -> None:
        for key in [k for k, b in self.buffers.items() if b is buffer]:
            del self.buffers[key]
        buffer.delete()

    def close(self) -> None:
        """Delete every buffer (the end of the run)."""
        for buffer in self.buffers.values():
            buffer.delete()
        self.buffers.clear()
