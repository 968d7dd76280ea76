"""``evaluate``: the one entry point the CLI and notebooks share.

For each (model, task): decide which modes still need running, load the task's data, extract
image features once per split, run zero-shot and the linear probe on them, write the record.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import evalbench
from evalbench.cache import FeatureCache
from evalbench.data import Rows, TaskData, load_task_data
from evalbench.errors import EvalbenchError
from evalbench.features import autocast, extract_features
from evalbench.metrics import classification_metrics
from evalbench.models import LazyModel, parse_model_spec
from evalbench.models.base import ModelSpec
from evalbench.probe import few_shot_probe, linear_probe, make_backend
from evalbench.records import MODES, SCHEMA_VERSION, pack_predictions, read_record, record_path, write_record
from evalbench.retrieval import encode_texts, retrieval_metrics
from evalbench.tasks.loader import Task, TaskRegistry
from evalbench.zeroshot import build_zeroshot_classifier, zeroshot_scores

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    if os.environ.get("EVALBENCH_CACHE"):
        return Path(os.environ["EVALBENCH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "evalbench"


@dataclass
class RunConfig:
    modes: tuple[str, ...] = MODES
    results_dir: Path = Path("results")
    cache_dir: Path = field(default_factory=default_cache_dir)
    batch_size: int = 64
    workers: int = 0
    device: str = "auto"
    limit: int | None = None
    precision: str = "fp32"
    probe_backend: str = "sklearn"
    probe_normalize: bool = False
    shots: tuple[int, ...] = ()  # k-shot probes instead of the full one
    seeds: int = 3
    use_cache: bool = True
    cache_dtype: str = "float32"
    overwrite: bool = False
    seed: int = 0
    progress: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EvalbenchError(f"--device: {name} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise EvalbenchError(f"--device: unknown device '{name}' (use auto, cpu or cuda)") from None


def record_mismatch(record: dict, spec: ModelSpec, task: Task, config: RunConfig) -> list[str]:
    """How an existing record differs from this run's model spec, task hash and ``--limit``."""
    mismatch = []
    if record["model"]["spec"] != spec.spec:
        mismatch.append(f"model spec {record['model']['spec']!r}")
    if record["task"]["hash"] != task.hash:
        mismatch.append(f"task hash {record['task']['hash']} (the task file changed)")
    if record["task"].get("limit") != config.limit:
        mismatch.append(f"--limit {record['task'].get('limit')}")
    return mismatch


def result_keys(config: RunConfig) -> list[str]:
    """The record keys this run produces: ``zeroshot``, ``linear_probe``, or ``linear_probe@K``
    per requested shot count."""
    keys = []
    for mode in config.modes:
        if mode == "linear_probe" and config.shots:
            keys += [f"linear_probe@{k}" for k in config.shots]
        else:
            keys.append(mode)
    return keys


def task_keys(task: Task, config: RunConfig) -> list[str]:
    """Result keys for this task: retrieval tasks have one, ``retrieval``, run with ``zeroshot``."""
    if task.spec.type == "retrieval":
        return ["retrieval"] if "zeroshot" in config.modes else []
    return result_keys(config)


def pending_modes(record: dict | None, spec: ModelSpec, task: Task, config: RunConfig) -> list[str]:
    """Result keys of this run that the existing record lacks. A record made for another model
    spec, task hash or ``--limit`` is an error unless ``--overwrite``: results are never replaced
    silently."""
    if record is None or config.overwrite:
        return task_keys(task, config)
    mismatch = record_mismatch(record, spec, task, config)
    if mismatch:
        path = record_path(config.results_dir, spec.slug, task.name)
        raise EvalbenchError(f"{path}: holds results for {', '.join(mismatch)}; pass --overwrite to replace them")
    return [m for m in task_keys(task, config) if m not in record.get("results", {})]


def _roles(task: Task, modes: list[str]) -> list[str]:
    return ["train", "val", "test"] if any(m.startswith("linear_probe") for m in modes) else ["test"]


def _features(model: LazyModel, data: TaskData, config: RunConfig, task: Task) -> dict[str, tuple]:
    """(features, labels) per role; each source split is encoded once, or read from the cache."""
    cache = FeatureCache(config.cache_dir if config.use_cache else None, config.cache_dtype)
    out = {}
    for split_name, split in data.sources.items():
        views = {role: v for role, v in data.views.items() if v.source_split == split_name}
        rows = np.unique(np.concatenate([v.indices for v in views.values()]))
        key = {
            "model": model.fingerprint,
            "data": data.fingerprint,
            "split": split_name,
            "rows": hashlib.sha256(rows.tobytes()).hexdigest()[:16],
            "precision": config.precision,
        }
        entry = cache.features(key, {"model": model.spec.name, "task": task.name, "split": split_name})
        dataset = Rows(split, rows)
        if entry is not None and entry.complete():
            feats = entry.load(len(rows))
        else:
            feats = extract_features(
                model.get(),
                dataset,
                batch_size=config.batch_size,
                workers=config.workers,
                desc=f"{task.name}/{split_name}",
                progress=config.progress,
                entry=entry,
                precision=config.precision,
            )
        for role, view in views.items():
            out[role] = (feats[np.searchsorted(rows, view.indices)], view.labels)
    return out


def _classifier(model: LazyModel, data: TaskData, config: RunConfig, task: Task) -> torch.Tensor:
    """The zero-shot text classifier, from the cache when the same prompts were encoded before."""
    cache = FeatureCache(config.cache_dir if config.use_cache else None)
    key = {"model": model.fingerprint, "classnames": data.classnames, "templates": data.templates,
           "precision": config.precision}
    cached = cache.load_text(key)
    if cached is not None:
        return torch.from_numpy(cached)
    adapter = model.get()
    with autocast(adapter.device, config.precision), torch.inference_mode():
        classifier = build_zeroshot_classifier(adapter, data.classnames, data.templates, progress=config.progress)
    classifier = classifier.float().cpu()
    cache.save_text(key, classifier.numpy(), {"model": model.spec.name, "task": task.name,
                                               "classes": len(data.classnames)})
    return classifier


def _text_features(model: LazyModel, texts: list[str], config: RunConfig, task: Task) -> np.ndarray:
    """Caption embeddings, from the cache when the same captions were encoded before."""
    cache = FeatureCache(config.cache_dir if config.use_cache else None)
    key = {"model": model.fingerprint, "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
           "precision": config.precision}
    cached = cache.load_text(key)
    if cached is not None:
        return cached
    adapter = model.get()
    with autocast(adapter.device, config.precision):
        feats = encode_texts(adapter, texts, progress=config.progress)
    cache.save_text(key, feats, {"model": model.spec.name, "task": task.name, "classes": len(texts)})
    return feats


def run_retrieval(model: LazyModel, task: Task, config: RunConfig) -> dict:
    """Image-text retrieval metrics on the test split."""
    data = load_task_data(task, ["test"], config.cache_dir, config.limit, config.seed)
    start = time.perf_counter()
    images, _ = _features(model, data, config, task)["test"]
    view = data.views["test"]
    captions = data.sources[view.source_split].captions
    texts, text_image = [], []
    for position, row in enumerate(view.indices):
        texts += captions[row]
        text_image += [position] * len(captions[row])
    text_feats = _text_features(model, texts, config, task)
    result = retrieval_metrics(images, text_feats, np.asarray(text_image))
    result.update(main_score=result[task.spec.main_metric], n=len(images), n_texts=len(texts),
                  duration_s=round(time.perf_counter() - start, 3))
    return {"retrieval": result}


def run_task(model: LazyModel, task: Task, modes: list[str], config: RunConfig) -> dict:
    """Results per mode for one (model, task)."""
    if task.spec.type == "retrieval":
        return run_retrieval(model, task, config)
    data = load_task_data(task, _roles(task, modes), config.cache_dir, config.limit, config.seed)
    if "zeroshot" in modes and not data.templates:
        raise EvalbenchError(f"{task.path}: templates: missing, and the data ships none (zero-shot needs them)")
    feats = _features(model, data, config, task)
    n_classes, metric = len(data.classnames), task.spec.main_metric
    results = {}
    if "zeroshot" in modes:
        start = time.perf_counter()
        classifier = _classifier(model, data, config, task)
        x, y = feats["test"]
        scores = zeroshot_scores(x, classifier)
        results["zeroshot"] = classification_metrics(y, scores, metric)
        results["zeroshot"].update(n=len(y), duration_s=round(time.perf_counter() - start, 3))
        if y.ndim == 1:
            results["zeroshot"]["per_sample"] = pack_predictions(scores, y)
    backend = make_backend(config.probe_backend, str(model.device))
    for mode in modes:
        if not mode.startswith("linear_probe"):
            continue
        start = time.perf_counter()
        if mode == "linear_probe":
            result = linear_probe(
                feats["train"], feats["val"], feats["test"], n_classes, metric, backend,
                config.probe_normalize, config.progress,
            )
        else:
            k = int(mode.split("@")[1])
            result = few_shot_probe(
                feats["train"], feats["val"], feats["test"], data.classnames, metric, k, config.seeds,
                backend, config.probe_normalize, config.progress,
            )
        results[mode] = {**result, "duration_s": round(time.perf_counter() - start, 3)}
    return results


def _provenance(device: torch.device, config: RunConfig, started: float, model: LazyModel) -> dict:
    import open_clip

    return {
        "precision": config.precision,
        "model_loaded": model.loaded,
        "evalbench": evalbench.__version__,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "seed": config.seed,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 3),
    }


def evaluate(
    models: list[str], tasks: list[str], config: RunConfig, registry: TaskRegistry | None = None
) -> list[Path]:
    """Run ``config.modes`` for every (model, task); return the paths of the records touched.

    Everything is validated before any model loads: task files, model spec syntax, duplicate
    names. Finished (model, task, mode) triples are skipped unless ``config.overwrite``.
    """
    registry = registry or TaskRegistry()
    specs = [parse_model_spec(m) for m in models]
    slugs = [s.slug for s in specs]
    if len(set(slugs)) != len(slugs):
        dup = next(s for s in slugs if slugs.count(s) > 1)
        raise EvalbenchError(f"--model: two models share the name '{dup}'; give one a name with NAME=SPEC")
    task_objs = [registry.get(t) for t in dict.fromkeys(tasks)]
    for task in task_objs:
        if task.spec.unavailable:
            raise EvalbenchError(f"{task.path}: unavailable: {task.spec.unavailable}")
    device = resolve_device(config.device)
    if config.precision == "amp" and device.type != "cuda":
        log.warning("--precision amp applies on CUDA only; using fp32 on %s", device)
        config = replace(config, precision="fp32")
    lazy_models = [LazyModel(spec, device) for spec in specs]  # validates every spec up front
    written = []
    for model in lazy_models:
        spec = model.spec
        for task in task_objs:
            path = record_path(config.results_dir, spec.slug, task.name)
            existing = read_record(path)
            todo = pending_modes(existing, spec, task, config)
            if task.spec.splits.train is None and any(m.startswith("linear_probe") for m in todo):
                log.info("%s: no train split, skipping the linear probe", task.name)
                todo = [m for m in todo if not m.startswith("linear_probe")]
            if not todo:
                log.info("%s / %s: done already (%s); --overwrite reruns", spec.name, task.name, path)
                written.append(path)
                continue
            started = time.perf_counter()
            log.info("%s / %s: %s", spec.name, task.name, ", ".join(todo))
            results = run_task(model, task, todo, config)
            # Modes not rerun stay, unless they were computed for something else.
            same = existing is not None and not record_mismatch(existing, spec, task, config)
            keep = existing["results"] if same else {}
            record = {
                "schema_version": SCHEMA_VERSION,
                "model": {"name": spec.name, "spec": spec.spec, "fingerprint": model.fingerprint},
                "task": {
                    "name": task.name,
                    "version": task.spec.version,
                    "hash": task.hash,
                    "main_metric": task.spec.main_metric,
                    "limit": config.limit,
                    "config": task.resolved,
                },
                "results": {**keep, **results},
                "provenance": _provenance(device, config, started, model),
            }
            write_record(path, record)
            written.append(path)
    return written
