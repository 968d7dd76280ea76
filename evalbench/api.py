"""The Python API that notebooks and the CLI share: ``evaluate``, ``list_tasks``,
``load_records``, ``report``.

For each (model, task), :func:`run` decides which modes still need running, loads the task's
data, extracts image features once per split, runs zero-shot and the linear probe on them, and
writes the record. :func:`evaluate` is the same with keyword settings, returning a table.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from filelock import FileLock

import evalbench
from evalbench import distributed
from evalbench.config import MODES, RunConfig, make_config
from evalbench.errors import EvalbenchError, ModelLoadError
from evalbench.models import LazyModel
from evalbench.models.base import ModelSpec
from evalbench.models.checkpoint import digest_memo
from evalbench.models.sweep import expand_model_specs
from evalbench.records import Record, load_record, record_path, write_record
from evalbench.runners import SkippedMode, run_task
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


def record_mismatch(record: Record, model: LazyModel, task: Task, config: RunConfig) -> list[str]:
    """How an existing record differs from this run's model (spec and weights), task hash and
    ``--limit``."""
    mismatch = []
    if record.model.spec != model.spec.spec:
        mismatch.append(f"model spec {record.model.spec!r}")
    elif record.model.fingerprint != model.fingerprint:
        mismatch.append(f"model fingerprint {record.model.fingerprint} (the weights changed)")
    if record.task.hash != task.hash:
        mismatch.append(f"task hash {record.task.hash} (the task file changed)")
    if record.task.limit != config.limit:
        mismatch.append(f"--limit {record.task.limit}")
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
    with ``zeroshot``; matching tasks have ``zeroshot`` only (there is nothing to probe)."""
    if task.spec.type in ("retrieval", "association"):
        return ["retrieval"] if "zeroshot" in config.modes else []
    if task.spec.type == "matching":
        return ["zeroshot"] if "zeroshot" in config.modes else []
    return result_keys(config)


def pending_modes(record: Record | None, model: LazyModel, task: Task, config: RunConfig) -> list[str]:
    """Result keys of this run that the existing record lacks. A record made for another model
    spec, task hash or ``--limit`` is an error unless ``--overwrite``: results are never replaced
    silently."""
    if record is None or config.overwrite:
        return task_keys(task, config)
    mismatch = record_mismatch(record, model, task, config)
    if mismatch:
        path = record_path(config.results_dir, model.spec.slug, task.name)
        hint = " (or name this model apart with NAME=SPEC)" if record.model.spec != model.spec.spec else ""
        raise EvalbenchError(f"{path}: holds results for {', '.join(mismatch)}; pass --overwrite to replace them{hint}")
    return [m for m in task_keys(task, config) if m not in record.results]


def provenance(device: torch.device, config: RunConfig, started: float, **extra) -> dict:
    """A record's ``provenance``: precision, library versions, device, world size, seed, time and
    duration since ``started``, with ``extra`` fields of the writer (``model_loaded`` for runs,
    ``evaluator`` for the in-training evaluator)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        open_clip = version("open_clip_torch")  # without importing it (3 s) on cached reruns
    except PackageNotFoundError:
        open_clip = None
    return {
        "precision": config.precision,
        **extra,
        "evalbench": evalbench.__version__,
        "torch": torch.__version__,
        "open_clip": open_clip,
        "python": platform.python_version(),
        "device": str(device),
        "world_size": distributed.world_size(),
        "seed": config.seed,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 3),
    }


@dataclass(frozen=True)
class FailedModel:
    """A model whose weights failed to load: its display name, ``--model`` spec and why."""

    name: str
    spec: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.spec}): {self.reason}"


class Evaluation(list):
    """What :func:`run` returns: the paths of the records it touched (it is that list); in
    ``skipped``, every (model, task, mode) it did not run because the task's data source lacks a
    split that mode needs (:class:`~evalbench.runners.SkippedMode`); in ``failed``, every model
    whose weights failed to load (:class:`FailedModel`)."""

    def __init__(self, paths: list[Path], skipped: list[SkippedMode], failed: list[FailedModel] | None = None):
        super().__init__(paths)
        self.skipped = skipped
        self.failed = failed or []


def run(
    models: list[str | ModelSpec], tasks: list[str], config: RunConfig, registry: TaskRegistry | None = None
) -> Evaluation:
    """Run ``config.modes`` for every (model, task); return the paths of the records touched,
    with ``.skipped`` listing the modes not run for a missing split and ``.failed`` the models
    that failed to load.

    ``models`` are ``--model`` specs (a glob in the weights part stands for every matching
    checkpoint, see :mod:`evalbench.models.sweep`) or parsed ModelSpecs. Everything is validated
    before any model loads: task files, model spec syntax, globs that match nothing, duplicate
    names. Finished (model, task, mode) triples are skipped unless ``config.overwrite``. A split
    a task names but its source lacks fails no run: the modes that need it are logged and listed
    in ``.skipped``, every other mode runs and is written. A model whose weights fail to load is
    logged and listed in ``.failed``, and the other models still run. Models are evaluated one
    after the other, each released after its turn; models that share preprocessing share each
    split's decoding pass (:mod:`evalbench.cohort`), so a sweep decodes its images once.
    Checkpoint digests are remembered in ``config.cache_dir`` (nowhere under ``use_cache=False``).
    """
    with digest_memo(config.cache_dir if config.use_cache else None):
        return _run(models, tasks, config, registry)


def _run(models: list[str], tasks: list[str], config: RunConfig, registry: TaskRegistry | None) -> Evaluation:
    registry = registry or TaskRegistry()
    specs = expand_model_specs(models)
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
        config = config.model_copy(update={"precision": "fp32"})
    lazy_models = [LazyModel(spec, device, config.trust_remote_code) for spec in specs]  # validates every spec up front
    if len(lazy_models) > 1 and config.use_cache:
        _join_cohort(lazy_models, task_objs, config)
    skipped: list[SkippedMode] = []
    failed: list[FailedModel] = []
    paths = []
    for model in lazy_models:
        try:
            paths += [evaluate_one(model, task, config, skipped) for task in task_objs]
        except ModelLoadError as e:
            log.error("%s; its remaining tasks are not run", e)
            failed.append(FailedModel(e.model, e.spec, e.reason))
        finally:
            model.release()  # a sweep holds only the models still to come (some loaded by shared passes)
    # A (model, task) whose every mode was skipped has no record to point to.
    return Evaluation([p for p in paths if p.exists() or not distributed.is_main()], skipped, failed)


def evaluate_one(model: LazyModel, task: Task, config: RunConfig, skipped: list[SkippedMode] | None = None) -> Path:
    """Bring one (model, task) record up to date and return its path. Modes not run for a
    missing split are appended to ``skipped``; a record is written only if a mode ran.

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
        existing = load_record(path) if main else None
        todo = distributed.broadcast(_todo(existing, model, task, config) if main else None)
        if not todo:
            return path
        started = time.perf_counter()
        log.info("%s / %s: %s", spec.name, task.name, ", ".join(todo))
        results, not_run = run_task(model, task, todo, config)
        if skipped is not None:
            skipped.extend(not_run)
        if not main or not results:
            return path
        # Modes not rerun stay, unless they were computed for something else.
        same = existing is not None and not record_mismatch(existing, model, task, config)
        keep = existing.results if same else {}
        record = Record(
            model={
                "name": spec.name, "spec": spec.spec, "fingerprint": model.fingerprint,
                "adapter": _adapter_metadata(model, existing if same else None),
                "step": model.step, "run": spec.run,
            },
            task={
                "name": task.name,
                "version": task.spec.version,
                "hash": task.hash,
                "main_metric": task.spec.main_metric,
                "limit": config.limit,
                "config": task.resolved,
            },
            results={**keep, **results},
            provenance=provenance(model.device, config, started, model_loaded=model.loaded),
        )
        write_record(path, record)
    return path


def _adapter_metadata(model: LazyModel, previous: Record | None) -> dict | None:
    """How the adapter ran the model (its ``metadata``: preprocessing, text padding, logit scale
    and bias); a run that never loaded the model (everything cached) keeps what the previous record
    of the same weights said. None for adapters that describe nothing (``py:``, plugins)."""
    if model.loaded:
        return getattr(model.get(), "metadata", None)
    return getattr(previous.model, "adapter", None) if previous is not None else None


def lock_path(config: RunConfig, record: Path) -> Path:
    """The lock file guarding ``record``: processes sharing a results folder must share the cache
    folder too (the default) for their writes to be serialised."""
    key = hashlib.sha256(str(record.resolve()).encode()).hexdigest()[:24]
    folder = Path(config.cache_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.lock"


def _todo(existing: Record | None, model: LazyModel, task: Task, config: RunConfig) -> list[str]:
    todo = pending_modes(existing, model, task, config)
    if task.spec.splits.train is None and any(m.startswith("linear_probe") for m in todo):
        log.info("%s: no train split, skipping the linear probe", task.name)
        todo = [m for m in todo if not m.startswith("linear_probe")]
    if not todo:
        path = record_path(config.results_dir, model.spec.slug, task.name)
        log.info("%s / %s: done already (%s); --overwrite reruns", model.spec.name, task.name, path)
    return todo


def _join_cohort(models: list[LazyModel], tasks: list[Task], config: RunConfig) -> None:
    """Tell every model which other models of the run want which task results, so that one pass
    over a split's images serves all that need it (see :mod:`evalbench.cohort`). Decided on
    rank 0 from the records as they are now; a record another process finishes meanwhile costs
    at most a wasted encoding, never a wrong result."""
    from evalbench.cohort import Cohort

    wanted = None
    if distributed.is_main():
        wanted = {}
        for i, model in enumerate(models):
            for task in tasks:
                try:
                    existing = load_record(record_path(config.results_dir, model.spec.slug, task.name))
                    keys = pending_modes(existing, model, task, config)
                except EvalbenchError:  # a conflicting record: reported on that model's own turn
                    keys = []
                if task.spec.splits.train is None:
                    keys = [k for k in keys if not k.startswith("linear_probe")]
                wanted[(i, task.name)] = keys
    wanted = distributed.broadcast(wanted)
    cohort = Cohort()
    for i, model in enumerate(models):
        model.cohort = cohort
        for task in tasks:
            cohort.want(model, task.name, wanted[(i, task.name)])


def _names(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def evaluate(
    models: str | Iterable[str],
    tasks: str | Iterable[str] = (),
    *,
    suite: str | Iterable[str] | None = None,
    modes: str | Iterable[str] = MODES,
    results_dir: str | Path = "results",
    tasks_dir: str | Path | Iterable[str | Path] = (),
    **settings,
):
    """Evaluate ``models`` on ``tasks`` (and every task of ``suite``) and return the results as a
    pandas DataFrame in the long format of ``evalbench report --format csv``: one row per
    (model, task, mode, metric) with columns ``model, task, mode, metric, value`` (fractions).

    ``models`` are ``--model`` specs (``"ViT-B-32@laion2b_s34b_b79k"``, ``"hf:openai/clip-vit-base-patch32"``,
    ``"demo-final"``); ``tasks`` are task names or YAML paths; ``tasks_dir`` adds folders of task
    files. ``modes`` is ``zeroshot``, ``linear_probe`` or both. Every other keyword is a setting of
    :class:`evalbench.config.RunConfig` (``batch_size``, ``device``, ``limit``, ``shots``,
    ``probe_backend``, ``cache_dir``, ``overwrite``, ...). Records are written to ``results_dir``
    as by ``evalbench run``; finished results are reused, never overwritten without
    ``overwrite=True``. Modes not run because a task's data lacks a split they need are listed in
    ``table.attrs["skipped"]`` (and logged); every other mode runs. Models whose weights fail to
    load are listed in ``table.attrs["failed"]`` (:class:`FailedModel`, and logged); the others
    run. A glob in a spec's weights part (``"ViT-B-32@ckpts/epoch_*.pt"``) evaluates every match.

    Raises EvalbenchError (a ValueError) naming the setting for an invalid setting, and for an
    unknown task, model or suite, before any model loads.

    >>> import evalbench
    >>> evalbench.evaluate("demo-final", "digits", modes="zeroshot")  # doctest: +SKIP
    """
    from evalbench.report.tables import long_table

    config = make_config(modes=modes, results_dir=results_dir, **settings)
    registry = TaskRegistry([tasks_dir] if isinstance(tasks_dir, (str, Path)) else list(tasks_dir))
    task_names = _names(tasks) + [t for s in _names(suite) for t in registry.suite(s).tasks]
    model_specs = _names(models)
    if not task_names:
        raise EvalbenchError("tasks: no task given (pass task names, YAML paths or suite=)")
    if not model_specs:
        raise EvalbenchError("models: no model given")
    paths = run(model_specs, task_names, config, registry)
    records = [r for r in (load_record(p) for p in paths) if r is not None]
    table = long_table([r.to_dict() for r in records])
    table.attrs["skipped"] = list(paths.skipped)
    table.attrs["failed"] = list(paths.failed)
    return table


def list_tasks(pattern: str | None = None, tasks_dir: str | Path | Iterable[str | Path] = ()) -> list[str]:
    """Names of the built-in tasks (and those under ``tasks_dir``) matching an fnmatch
    ``pattern`` (``"imagenet*"``), in natural order."""
    dirs = [tasks_dir] if isinstance(tasks_dir, (str, Path)) else list(tasks_dir)
    return TaskRegistry(dirs).names(pattern)


def load_records(results_dir: str | Path = "results") -> list[Record]:
    """Every valid record under ``results_dir`` as :class:`evalbench.records.Record` objects;
    files that are not valid records are named in a warning and skipped."""
    from evalbench.report.build import load_records as _load

    return _load(results_dir)


def report(
    results_dir: str | Path = "results",
    *,
    format: str = "md",
    baseline: str | None = None,
    output: str | Path | None = None,
    tasks_dir: str | Path | Iterable[str | Path] = (),
    records: list | None = None,
    resamples: int = 1000,
    seed: int = 0,
    published: bool = False,
    published_tolerance: float | None = None,
    tensorboard: str | Path | None = None,
) -> str:
    """The report of every record under ``results_dir`` (or of ``records``) as text in
    ``format`` (md, csv, latex, json, html), with deltas against ``baseline`` when given, and
    open_clip's published figures beside each ``ARCH@TAG`` record with ``published`` (differences
    past ``published_tolerance`` points flagged, default 0.5); also written atomically to
    ``output`` when given. ``baseline`` is a model name or ``RUN@STEP`` (a checkpoint of a run);
    with ``tensorboard``, each checkpoint's main scores are also written there as TensorBoard
    scalars, one subfolder per run. Raises EvalbenchError for an unknown format or baseline, or
    ``tensorboard`` without the tensorboard package or without records that have a step."""
    from evalbench.fileio import atomic_write_text
    from evalbench.report import CompareOptions, build_report, render_report
    from evalbench.report.formats import renderer

    renderer(format)
    dirs = [tasks_dir] if isinstance(tasks_dir, (str, Path)) else list(tasks_dir)
    if records is None:
        records = load_records(results_dir)
    if published and published_tolerance is None:
        from evalbench.report.published import DEFAULT_TOLERANCE

        published_tolerance = DEFAULT_TOLERANCE
    built = build_report(records, TaskRegistry(dirs).suites(), baseline, CompareOptions(resamples=resamples, seed=seed),
                         published_tolerance)
    text = render_report(built, format)
    if tensorboard is not None:
        from evalbench.report.tensorboard import write_tensorboard

        write_tensorboard(built, tensorboard)
    if output is not None:
        atomic_write_text(Path(output), text)
    return text
