"""The models of one run that read the same task data, so that one decoding pass serves them all.

``evalbench run --model a --model b ...`` evaluates model by model. When the first model needs
image features of a split, the later models of the run that will need the same features (the
same task and the same pending result keys, hence the same split rows) and that preprocess images
identically get theirs in the same pass (:func:`evalbench.runners.split_features`): each batch is
read and decoded once, then encoded by each model. Their own turn then finds the features cached.

The models of a pass are all in memory, up to :func:`pass_memory_budget` of weights. Measured
against decoding once into a float32 buffer and loading one model at a time (benchmarks/sweep.py,
BENCHMARKS.md "Checkpoint sweeps"): as fast with the tiny demo model (decoding dominates), about
10% faster with ViT-S-32 (encoding dominates), at the cost of more memory (2.8 GB against 1.7 GB
peak for six ViT-S-32), which the budget bounds.
"""

from __future__ import annotations

import logging
import os

import torch

from evalbench import distributed
from evalbench.features import preprocess_key
from evalbench.models import LazyModel

log = logging.getLogger(__name__)


def pass_memory_budget(device: torch.device | None = None) -> int:
    """Bytes of model weights one shared pass may hold: a quarter of the machine's memory, and on
    a CUDA device at most a quarter of that GPU's memory (the rest is for activations). The models
    beyond it get a pass of their own (on their own turn, shared with the models after them), so
    a sweep of any length holds at most this much (plus one model) at once."""
    try:
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        budget = 8 * 2**30
    if device is not None and device.type == "cuda":
        budget = min(budget, torch.cuda.get_device_properties(device).total_memory // 4)
    return budget


def weights_bytes(adapter) -> int:
    """The bytes of the parameters and buffers of the torch modules an adapter holds."""
    modules = [v for v in vars(adapter).values() if isinstance(v, torch.nn.Module)]
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


class Cohort:
    """Which models of a run still want which task's results, in the run's order.

    ``want(model, task, keys)`` records a model's pending result keys for a task (computed on
    rank 0 before anything runs); ``after(model, task)`` gives the later models with the same
    keys, the candidates for sharing ``model``'s pass over that task's data.
    """

    def __init__(self) -> None:
        self.order: list[LazyModel] = []
        self.keys: dict[tuple[int, str], frozenset[str]] = {}
        self.failed: set[int] = set()
        self.preprocessing: dict[int, str | None] = {}  # by model, once loaded: preprocess_key

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
        return [m for m in later if self.keys.get((id(m), task)) == mine and id(m) not in self.failed]

    def load_peers(self, model: LazyModel, candidates: list[LazyModel]) -> list[LazyModel]:
        """The ``candidates`` that load and preprocess images exactly as the loaded ``model``
        does. A candidate that fails to load is logged and left out (on every rank alike), and
        not tried again in a shared pass: its own turn loads it again and reports its error.
        Peers join while the weights of the pass stay within :func:`pass_memory_budget`."""
        key = self._preprocessing(model)
        if key is None or not candidates:
            return []
        loaded = []
        held, budget = weights_bytes(model.get()), pass_memory_budget(model.device)
        for peer in candidates:
            if id(peer) in self.preprocessing and self.preprocessing[id(peer)] != key:
                continue  # known to differ: not loaded again to find out
            if held >= budget:
                log.info("%s: the models of this pass hold %.1f GB of weights; later models get their own pass",
                         model.spec.name, held / 1e9)
                break
            try:
                peer.get()
                ok = True
            except Exception as e:  # noqa: BLE001 - that model fails on its own turn, by name
                log.warning("%s: not loaded for a shared pass (%s: %s); it is tried again on its own turn",
                            peer.spec.name, type(e).__name__, e)
                ok = False
            oks = distributed.gather(ok)
            if not distributed.broadcast(all(oks) if distributed.is_main() else None):
                self.failed.add(id(peer))
                continue
            same = peer.device == model.device and self._preprocessing(peer) == key
            if distributed.broadcast(same):
                loaded.append(peer)
                held += weights_bytes(peer.get())
            else:  # its own pass comes on its own turn; meanwhile it need not hold memory
                peer.release()
        return loaded

    def _preprocessing(self, model: LazyModel) -> str | None:
        if id(model) not in self.preprocessing:
            self.preprocessing[id(model)] = preprocess_key(model.get().preprocess)
        return self.preprocessing[id(model)]
