"""``evaluate``: the one entry point the CLI and notebooks share.

For each (model, task): decide which modes still need running, load the task's data, extract
image features once per split, run zero-shot and the linear probe on them, write the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from filelock import FileLock

import evalbench
from evalbench import distributed
from evalbench.config import RunConfig
from evalbench.errors import EvalbenchError
from evalbench.models import LazyModel, parse_model_spec
from evalbench.records import SCHEMA_VERSION, read_record, record_path, write_record
from evalbench.runners import run_task
from evalbench.tasks.loader import Task, TaskRegistry

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise EvalbenchError(f"--device: {name} requested but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise EvalbenchError(f"--device: unknown device '{name}' (use auto, cpu or cuda)") from None


def record_mismatch(record: dict, model: LazyModel, task: Task, config: RunConfig) -> list[str]:
    """How an existing record differs from this run's model (spec and weights), task hash and
    ``--limit``."""
    mismatch = []
    if record["model"]["spec"] != model.spec.spec:
        mismatch.append(f"model spec {record['model']['spec']!r}")
    elif record["model"].get("fingerprint") != model.fingerprint:
        mismatch.append(f"model fingerprint {record['model'].get('fingerprint')} (the weights changed)")
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
    """Result keys for this task: retrieval and association tasks have one, ``retrieval``, run
    with ``zeroshot``."""
    if task.spec.type in ("retrieval", "association"):
        return ["retrieval"] if "zeroshot" in config.modes else []
    return result_keys(config)


def pending_modes(record: dict | None, model: LazyModel, task: Task, config: RunConfig) -> list[str]:
    """Result keys of this run that the existing record lacks. A record made for another model
    spec, task hash or ``--limit`` is an error unless ``--overwrite``: results are never replaced
    silently."""
    if record is None or config.overwrite:
        return task_keys(task, config)
    mismatch = record_mismatch(record, model, task, config)
    if mismatch:
        path = record_path(config.results_dir, model.spec.slug, task.name)
        raise EvalbenchError(f"{path}: holds results for {', '.join(mismatch)}; pass --overwrite to replace them")
    return [m for m in task_keys(task, config) if m not in record.get("results", {})]


def _provenance(device: torch.device, config: RunConfig, started: float, model: LazyModel) -> dict:
    from importlib.metadata import version

    return {
        "precision": config.precision,
        "model_loaded": model.loaded,
        "evalbench": evalbench.__version__,
        "torch": torch.__version__,
        "open_clip": version("open_clip_torch"),  # without importing it (3 s) on cached reruns
        "python": platform.python_version(),
        "device": str(device),
        "world_size": distributed.world_size(),
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
    device = distributed.local_device(resolve_device(config.device))
    distributed.init_from_env(device)
    if config.precision == "amp" and device.type != "cuda":
        log.warning("--precision amp applies on CUDA only; using fp32 on %s", device)
        config = replace(config, precision="fp32")
    lazy_models = [LazyModel(spec, device, config.trust_remote_code) for spec in specs]  # validates every spec up front
    return [evaluate_one(model, task, config) for model in lazy_models for task in task_objs]


def evaluate_one(model: LazyModel, task: Task, config: RunConfig) -> Path:
    """Bring one (model, task) record up to date and return its path.

    The whole read-compute-write runs under a lock, so two processes on the same results folder
    never tear or lose a record: the second waits, re-reads, and finds the work done (or merges
    its own modes in). Lock files live in the cache folder (``locks/``), keyed by the record's
    absolute path, so a failed run leaves nothing in the results folder.
    """
    spec = model.spec
    path = record_path(config.results_dir, spec.slug, task.name)
    lock = FileLock(lock_path(config, path))
    main = distributed.is_main()  # under torchrun, rank 0 decides, locks and writes
    if main and lock.is_locked:
        log.info("%s / %s: waiting for another process working on it", spec.name, task.name)
    with lock if main else contextlib.nullcontext():
        existing = read_record(path) if main else None
        todo = distributed.broadcast(_todo(existing, model, task, config) if main else None)
        if not todo:
            return path
        started = time.perf_counter()
        log.info("%s / %s: %s", spec.name, task.name, ", ".join(todo))
        results = run_task(model, task, todo, config)
        if not main:
            return path
        # Modes not rerun stay, unless they were computed for something else.
        same = existing is not None and not record_mismatch(existing, model, task, config)
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
            "provenance": _provenance(model.device, config, started, model),
        }
        write_record(path, record)
    return path


def lock_path(config: RunConfig, record: Path) -> Path:
    """The lock file guarding ``record``: processes sharing a results folder must share the cache
    folder too (the default) for their writes to be serialised."""
    key = hashlib.sha256(str(record.resolve()).encode()).hexdigest()[:24]
    folder = Path(config.cache_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.lock"


def _todo(existing: dict | None, model: LazyModel, task: Task, config: RunConfig) -> list[str]:
    todo = pending_modes(existing, model, task, config)
    if task.spec.splits.train is None and any(m.startswith("linear_probe") for m in todo):
        log.info("%s: no train split, skipping the linear probe", task.name)
        todo = [m for m in todo if not m.startswith("linear_probe")]
    if not todo:
        path = record_path(config.results_dir, model.spec.slug, task.name)
        log.info("%s / %s: done already (%s); --overwrite reruns", model.spec.name, task.name, path)
    return todo
