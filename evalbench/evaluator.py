"""The in-training evaluator: build once for a suite, call with the model at each evaluation step.

::

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    evaluator = evalbench.Evaluator(suite="offline", preprocess=preprocess, tokenizer=tokenizer,
                                    results_dir="results", run="exp1", batch_size=256)
    for step in ...:
        scores = evaluator(model, step=step)   # {"digits": {"acc1": 0.78, ...}, ...}

Construction loads the tasks, decodes and preprocesses every image the modes need once
(:mod:`evalbench.prepared`) and tokenizes the prompts once. A call encodes those images and
prompts with the current weights (``torch.inference_mode``, autocast per ``precision``, the
model's train/eval mode restored afterwards), scores them with the functions ``evalbench run``
uses, writes one record per task (model ``"{run}@{step}"``, with ``model.step`` and
``model.run``) and returns ``{task: {metric: value}}``.

Under ``torch.distributed`` every rank builds the evaluator and calls it with the same steps.
Each rank decodes and encodes only its contiguous share of each split (and of the prompts);
shares are padded to equal length, so every rank makes the same forward passes and the same
sequence of collectives (all_gather of the features, broadcasts of the decisions and of the
result). Rank 0 computes the metrics and writes the records; every rank returns the same dict.
No collective is made by rank 0 alone, so a rank that reaches the call early simply waits in the
first collective for the others, and an error on rank 0 while scoring is broadcast and raised on
every rank instead of leaving them waiting.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evalbench import distributed
from evalbench.api import provenance
from evalbench.config import make_config
from evalbench.data import Rows, TaskData, load_task_data
from evalbench.errors import EvalbenchError
from evalbench.features import autocast
from evalbench.models.base import ModelSpec, logit_metadata
from evalbench.models.openclip import ModuleAdapter
from evalbench.prepared import STORAGES, PreparedImages
from evalbench.records import Record, record_path, write_record
from evalbench.retrieval import retrieval_metrics
from evalbench.runners import _nan_free_rows, _rows_of, caption_pairs, roles_of, zeroshot_result
from evalbench.tasks.loader import Task, TaskRegistry
from evalbench.zeroshot import class_embeddings, class_prompts

log = logging.getLogger(__name__)

# Task types the evaluator scores, and the modes it runs on each.
SUPPORTED = {"classification": ("zeroshot", "linear_probe"), "multilabel": ("zeroshot", "linear_probe"),
             "retrieval": ("zeroshot",)}


@dataclass
class _Split:
    """One source split of a task: the sorted rows its views read, and this rank's share of their
    preprocessed images."""

    rows: np.ndarray
    images: PreparedImages


@dataclass
class _Prepared:
    """A task ready for repeated calls: its data (labels, views), images, prompts (class prompts
    or captions) and their tokens, and the modes it runs (record keys)."""

    task: Task
    data: TaskData
    splits: dict[str, _Split]
    prompts: list[str]
    tokens: torch.Tensor | None
    keys: list[str]


def _names(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class Evaluator:
    """Evaluate an in-memory model on a fixed set of tasks, cheaply and repeatedly.

    ``tasks`` (names or YAML paths) and ``suite`` choose the tasks; ``tasks_dir`` adds folders of
    task files. ``preprocess`` is the model's image transform (PIL -> tensor) and ``tokenizer``
    its tokenizer (list of str -> token tensor); the tokenizer may be omitted when every call
    passes an evalbench ModelAdapter, which encodes text itself. ``run`` names the training run:
    records are written under ``results_dir`` (None: none are written) as model ``"{run}@{step}"``.
    ``modes``: ``zeroshot`` (and retrieval for retrieval tasks) and, since each call then costs a
    C sweep, optionally ``linear_probe``. ``storage`` (float32, float16, uint8) and
    ``storage_dir`` (memory-mapped files there) bound the memory of the kept images; see
    :mod:`evalbench.prepared`. Other keywords are :class:`evalbench.RunConfig` settings:
    ``batch_size``, ``workers``, ``limit``, ``precision``, ``probe_backend``, ``overwrite``,
    ``cache_dir`` (where generated and downloaded data live), ``seed``, ``progress``,
    ``on_bad_image``.

    Raises EvalbenchError naming the setting or task for bad settings, unknown tasks and task
    types it cannot score (matching, association).
    """

    def __init__(
        self,
        tasks: str | Iterable[str] = (),
        *,
        suite: str | Iterable[str] | None = None,
        preprocess,
        tokenizer=None,
        run: str = "model",
        results_dir: str | Path | None = "results",
        modes: str | Iterable[str] = "zeroshot",
        tasks_dir: str | Path | Iterable[str | Path] = (),
        storage: str = "float32",
        storage_dir: str | Path | None = None,
        **settings,
    ):
        self.config = make_config(modes=modes, **({"results_dir": results_dir} if results_dir else {}), **settings)
        if self.config.shots:
            raise EvalbenchError("shots: the evaluator runs the full linear probe only")
        if storage not in STORAGES:
            raise EvalbenchError(f"storage: {storage!r} is not allowed (allowed: {', '.join(STORAGES)})")
        if not isinstance(run, str) or not run.strip():
            raise EvalbenchError("run: must be a non-empty name")
        if not callable(preprocess):
            raise EvalbenchError("preprocess: must be the model's image transform (PIL image -> tensor)")
        self.results_dir = Path(results_dir) if results_dir else None
        self.run, self.preprocess, self.tokenizer = run, preprocess, tokenizer
        self.calls = 0
        self.world_size = distributed.world_size()
        registry = TaskRegistry([tasks_dir] if isinstance(tasks_dir, (str, Path)) else list(tasks_dir))
        names = _names(tasks) + [t for s in _names(suite) for t in registry.suite(s).tasks]
        if not names:
            raise EvalbenchError("tasks: no task given (pass task names, YAML paths or suite=)")
        task_objs = [registry.get(t) for t in dict.fromkeys(names)]
        for task in task_objs:
            if task.spec.unavailable:
                raise EvalbenchError(f"{task.path}: unavailable: {task.spec.unavailable}")
            if task.spec.type not in SUPPORTED:
                raise EvalbenchError(f"{task.path}: type: the evaluator scores {', '.join(SUPPORTED)} tasks, "
                                     f"not {task.spec.type}; run it with `evalbench run`")
        self.storage, self.storage_dir = storage, Path(storage_dir) if storage_dir else None
        self.tasks = [self._prepare(task) for task in task_objs]
        self.nbytes = sum(s.images.nbytes for t in self.tasks for s in t.splits.values())
        log.info("evaluator: %d tasks, %.1f MB of prepared images on this rank", len(self.tasks), self.nbytes / 1e6)

    def _prepare(self, task: Task) -> _Prepared:
        config = self.config
        if task.spec.type == "retrieval":
            keys = ["retrieval"] if "zeroshot" in config.modes else []
        else:
            keys = [m for m in config.modes if m != "linear_probe" or task.spec.splits.train is not None]
        if not keys:
            raise EvalbenchError(f"{task.path}: none of modes {', '.join(config.modes)} applies to this task")
        roles = [r for r in ("train", "val", "test") if any(r in roles_of(k) for k in keys)]
        data = load_task_data(task, roles, config.cache_dir, config.limit, config.seed)
        if "zeroshot" in keys and not data.templates:
            raise EvalbenchError(f"{task.path}: templates: missing, and the data ships none (zero-shot needs them)")
        splits = {}
        for name, split in data.sources.items():
            rows = np.unique(np.concatenate([v.indices for v in data.views.values() if v.source_split == name]))
            if not len(rows):
                raise EvalbenchError(f"{task.path}: splits: split '{name}' has no images")
            start, stop, _ = distributed.shard(len(rows))
            path = None
            if self.storage_dir is not None:
                path = self.storage_dir / f"{task.name}-{name}-rank{distributed.rank()}.npy"
            images = PreparedImages(Rows(split, rows[start:stop]), self.preprocess, self.storage, path,
                                    config.batch_size, config.workers, f"{task.name}/{name}", config.progress,
                                    config.on_bad_image)
            splits[name] = _Split(rows, images)
        if task.spec.type == "retrieval":
            prompts, _ = caption_pairs(data)
        else:
            prompts = class_prompts(data.classnames, data.templates) if "zeroshot" in keys else []
        tokens = self.tokenizer(prompts) if self.tokenizer is not None and prompts else None
        return _Prepared(task, data, splits, prompts, tokens, keys)

    # -- a call ---------------------------------------------------------------------------

    def __call__(self, model, step: int | None = None) -> dict[str, dict[str, float]]:
        """Scores of ``model`` on every task, ``{task: {metric: value}}`` (fractions), and one
        record per task written for ``step`` (default: the number of earlier calls).

        ``model``: an open_clip-style module (``encode_image``, ``encode_text``; a
        DistributedDataParallel wrapper is looked through) or an evalbench ModelAdapter. Its
        train/eval mode is the same afterwards. A step whose records exist raises EvalbenchError
        before any forward pass unless the evaluator was built with ``overwrite=True``.
        """
        if distributed.world_size() != self.world_size:
            raise EvalbenchError(f"the evaluator was built with {self.world_size} ranks and is called with "
                                 f"{distributed.world_size()}; build it after init_process_group")
        step = self.calls if step is None else int(step)
        adapter, module = self._adapter(model)
        name = f"{self.run}@{step}"
        problem = distributed.broadcast(self._existing(name) if distributed.is_main() else None)
        if problem:
            raise EvalbenchError(problem)
        self.calls += 1
        started = time.perf_counter()
        with _eval_mode(module), torch.inference_mode(), autocast(adapter.device, self.config.precision):
            encoded = [(t, self._encode(adapter, t)) for t in self.tasks]
        outcome = None
        if distributed.is_main():
            try:
                outcome = {t.task.name: self._score(t, *e, name, step, adapter, started) for t, e in encoded}
            except Exception as e:  # noqa: BLE001 - sent to every rank, then raised everywhere
                failure = e
                outcome = f"{type(e).__name__}: {e}"
        outcome = distributed.broadcast(outcome)
        if isinstance(outcome, str):
            if distributed.is_main():
                raise failure
            raise RuntimeError(f"rank 0 failed while scoring: {outcome}")
        return outcome

    def _adapter(self, model) -> tuple:
        """(adapter, the nn.Module whose train/eval mode to set) for what a call was given."""
        if callable(getattr(model, "encode_images", None)) and callable(getattr(model, "encode_texts", None)):
            module = getattr(model, "model", None)
            return model, module if isinstance(module, torch.nn.Module) else None
        inner = model
        if not hasattr(inner, "encode_image") and hasattr(inner, "module"):  # DistributedDataParallel
            inner = inner.module
        if not (callable(getattr(inner, "encode_image", None)) and callable(getattr(inner, "encode_text", None))):
            raise EvalbenchError(f"model: a {type(model).__name__} has neither encode_image/encode_text "
                                 "(open_clip) nor encode_images/encode_texts (an evalbench ModelAdapter)")
        if self.tokenizer is None:
            raise EvalbenchError("tokenizer: needed to encode prompts with an open_clip-style model; "
                                 "pass tokenizer= when building the Evaluator")
        device = next(iter(inner.parameters()), torch.empty(0)).device if isinstance(inner, torch.nn.Module) \
            else torch.device("cpu")
        spec = ModelSpec(name=self.run, spec=f"evaluator:{self.run}", family="open_clip", target="in-memory")
        return ModuleAdapter(inner, self.tokenizer, self.preprocess, device, spec), model

    def _existing(self, name: str) -> str | None:
        """Why this step cannot be written (a record exists, no overwrite), or None."""
        if self.results_dir is None or self.config.overwrite:
            return None
        slug = ModelSpec(name=name, spec=name, family="", target="").slug
        for t in self.tasks:
            path = record_path(self.results_dir, slug, t.task.name)
            if path.exists():
                return f"{path}: a record of {name} exists; build the Evaluator with overwrite=True to replace it"
        return None

    def _encode(self, adapter, prepared: _Prepared) -> tuple[dict, torch.Tensor | None]:
        """Image features per source split and prompt embeddings, on rank 0 (None elsewhere)."""
        feats = {name: self._encode_images(adapter, split) for name, split in prepared.splits.items()}
        texts = None
        if prepared.prompts:
            texts = self._encode_texts(adapter, prepared)
        return feats, texts

    def _encode_images(self, adapter, split: _Split) -> np.ndarray | None:
        _, _, slots = distributed.shard(len(split.rows))
        size = self.config.batch_size
        local = torch.cat([adapter.encode_images(split.images.batch(b, min(slots, b + size))).float()
                           for b in range(0, slots, size)])
        if len(split.images.bad):
            local[torch.from_numpy(split.images.bad)] = float("nan")  # left out by rank 0, as the runners do
        gathered = distributed.gather_rows(local, len(split.rows))
        return None if gathered is None else gathered.numpy()

    def _encode_texts(self, adapter, prepared: _Prepared) -> torch.Tensor | None:
        n = len(prepared.prompts)
        start, stop, slots = distributed.shard(n)
        # Padding repeats prompt 0, so a rank with a short (or empty) share runs as many batches.
        index = np.concatenate([np.arange(start, stop), np.zeros(slots - (stop - start), dtype=np.int64)])
        size = self.config.batch_size
        parts = []
        for b in range(0, slots, size):
            chunk = index[b : b + size]
            if prepared.tokens is not None and hasattr(adapter, "encode_tokens"):
                parts.append(adapter.encode_tokens(prepared.tokens[torch.from_numpy(chunk)]).float())
            else:
                parts.append(adapter.encode_texts([prepared.prompts[i] for i in chunk]).float())
        return distributed.gather_rows(torch.cat(parts), n)

    # -- scoring and records (rank 0) -------------------------------------------------------

    def _score(self, prepared: _Prepared, feats: dict, texts: torch.Tensor | None, name: str, step: int,
               adapter, started: float) -> dict[str, float]:
        task, data, config = prepared.task, prepared.data, self.config
        results = {}
        if task.spec.type == "retrieval":
            view = data.views["test"]
            images = _rows_of(feats[view.source_split], prepared.splits[view.source_split].rows, view.indices)
            if _nan_free_rows(images) is not None:
                raise EvalbenchError(f"{task.name}: retrieval cannot leave images out; fix the undecodable images")
            _, text_image = caption_pairs(data)
            result = retrieval_metrics(images, texts.numpy(), text_image)
            result.update(main_score=result[task.spec.main_metric], n=len(images), n_texts=len(text_image))
            results["retrieval"] = result
        if "zeroshot" in prepared.keys and task.spec.type != "retrieval":
            roles = self._roles(prepared, feats, ["test"])
            x, y, kept = roles["test"]
            groups = data.views["test"].groups
            if groups is not None and kept is not None:
                groups = groups[kept]
            classifier = class_embeddings(texts, len(data.classnames)).T.contiguous()
            results["zeroshot"] = zeroshot_result(x, y, classifier, task.spec.main_metric, groups)
        if "linear_probe" in prepared.keys:
            from evalbench.probe import linear_probe, make_backend

            roles = self._roles(prepared, feats, ["train", "val", "test"])
            backend = make_backend(config.probe_backend, str(adapter.device))
            results["linear_probe"] = linear_probe(*((x, y) for x, y, _ in roles.values()), len(data.classnames),
                                                   task.spec.main_metric, backend, config.probe_normalize,
                                                   config.progress)
        for result in results.values():
            result["data_fingerprint"] = data.fingerprint
        if self.results_dir is not None:
            self._write(prepared, results, name, step, adapter, started)
        return _scalars(results)

    @staticmethod
    def _roles(prepared: _Prepared, feats: dict, roles: list[str]) -> dict:
        """role -> (features, labels, mask of the view's rows kept or None), undecodable images
        (NaN rows) left out."""
        out = {}
        for role in roles:
            view = prepared.data.views[role]
            x = _rows_of(feats[view.source_split], prepared.splits[view.source_split].rows, view.indices)
            good = _nan_free_rows(x)
            out[role] = (x, view.labels, None) if good is None else (x[good], view.labels[good], good)
        return out

    def _write(self, prepared: _Prepared, results: dict, name: str, step: int, adapter, started: float) -> None:
        task, config = prepared.task, self.config
        slug = ModelSpec(name=name, spec=name, family="", target="").slug
        module = getattr(adapter, "model", None)
        metadata = getattr(adapter, "metadata", None)
        if metadata is None and module is not None:
            metadata = {"family": "in-memory", "class": type(module).__name__,
                        **logit_metadata(getattr(module, "logit_scale", None), getattr(module, "logit_bias", None))}
        record = Record(
            model={"name": name, "spec": f"evaluator:{self.run}", "fingerprint": None, "adapter": metadata,
                   "step": step, "run": self.run},
            task={"name": task.name, "version": task.spec.version, "hash": task.hash,
                  "main_metric": task.spec.main_metric, "limit": config.limit, "config": task.resolved},
            results=results,
            provenance=provenance(adapter.device, config, started,
                                  evaluator={"storage": self.storage, "batch_size": config.batch_size}),
        )
        write_record(record_path(self.results_dir, slug, task.name), record)


def _scalars(results: dict) -> dict[str, float]:
    """A task's numbers as one flat mapping: zero-shot and retrieval metrics by name, probe
    metrics as ``linear_probe/NAME``; counts, choices and per-sample data left out."""
    out = {}
    for mode, result in results.items():
        prefix = "" if mode in ("zeroshot", "retrieval") else f"{mode}/"
        for key, value in result.items():
            if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and key != "n":
                if not key.startswith(("n_", "duration")) and key != "C":
                    out[prefix + key] = float(value)
    return out


@contextlib.contextmanager
def _eval_mode(module):
    """``module.eval()`` for the duration, then the train/eval mode of each submodule as it was."""
    if not isinstance(module, torch.nn.Module):
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
