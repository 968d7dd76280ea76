"""Runners: for one (model, task), features once per split, then each mode on them.

Zero-shot and the probes share the image features; retrieval adds caption embeddings. Features
and text embeddings come from the cache when they were computed before, so a model is loaded only
when something is missing.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from evalbench import __version__, distributed
from evalbench.cache import FeatureCache, array_digest
from evalbench.config import RunConfig
from evalbench.data import Rows, TaskData, load_task_data
from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.features import FeatureJob, autocast, extract_shared
from evalbench.association import association_metrics, cue_prompt
from evalbench.metrics import GROUP_METRICS, classification_metrics
from evalbench.models import LazyModel
from evalbench.probe import few_shot_probe, linear_probe, make_backend
from evalbench.probe.sweep import PROTOCOL_VERSION
from evalbench.records import pack_groups, pack_predictions
from evalbench.retrieval import encode_texts, retrieval_metrics
from evalbench.sources.base import SplitData
from evalbench.tasks.loader import Task
from evalbench.zeroshot import build_zeroshot_classifier, zeroshot_scores

log = logging.getLogger(__name__)


# The data roles each mode reads. Few-shot probes (linear_probe@K) read what the full probe reads.
MODE_ROLES: dict[str, tuple[str, ...]] = {
    "zeroshot": ("test",),
    "linear_probe": ("train", "val", "test"),
    "retrieval": ("test",),
}


def roles_of(mode: str) -> tuple[str, ...]:
    """The roles (train, val, test) that result key ``mode`` needs, e.g. ``linear_probe@4``."""
    return MODE_ROLES[mode.split("@")[0]]


def _roles(modes: list[str]) -> list[str]:
    return [r for r in ("train", "val", "test") if any(r in roles_of(m) for m in modes)]


@dataclass(frozen=True)
class SkippedMode:
    """A (model, task, mode) that was not run because the task's source lacks a split it needs.

    ``split`` is the split the task names, ``available`` the splits the source has (empty when
    it cannot list them) and ``where`` the folder or dataset that was looked in.
    """

    model: str
    task: str
    mode: str
    split: str
    available: tuple[str, ...]
    where: str

    def __str__(self) -> str:
        has = ", ".join(self.available) or "none found"
        return (f"{self.model} / {self.task} / {self.mode} not run: no split '{self.split}' in {self.where} "
                f"(the source has: {has})")


def _skip_missing(model: LazyModel, task: Task, modes: list[str], data: TaskData) -> tuple[list[str], list[SkippedMode]]:
    """Split ``modes`` into those whose roles all loaded and those skipped for a missing split;
    log each skip, and drop the views and splits that only the skipped modes needed (so no
    features are computed for them)."""
    run, skipped = [], []
    for mode in modes:
        lacking = [r for r in roles_of(mode) if r in data.missing]
        if not lacking:
            run.append(mode)
            continue
        e: MissingSplitError = data.missing[lacking[0]]
        skip = SkippedMode(model.spec.name, task.name, mode, e.split, tuple(e.available), e.where)
        log.warning("%s", skip)
        skipped.append(skip)
    needed = set(_roles(run))
    data.views = {r: v for r, v in data.views.items() if r in needed}
    used = {v.source_split for v in data.views.values()}
    data.sources = {s: d for s, d in data.sources.items() if s in used}
    return run, skipped


def model_key(model: LazyModel) -> dict:
    """The model's part of every cache key: its weights (``fingerprint``: resolved hub commit or
    file content, architecture, preprocessing config) and the code that computes its embeddings
    (``code_version``: e.g. open_clip's version)."""
    return {"model": model.fingerprint, "code": model.code_version}


def feature_key(model: LazyModel, data_fingerprint: str, split: str, rows: np.ndarray, precision: str) -> dict:
    """The feature-cache key of ``rows`` of a source split: everything the image features depend
    on, the ``--precision`` included (amp features differ from fp32 ones)."""
    return {
        **model_key(model),
        "data": data_fingerprint,
        "split": split,
        "rows": hashlib.sha256(rows.tobytes()).hexdigest()[:16],
        "precision": precision,
    }


def classifier_key(model: LazyModel, classnames: list[str], templates: list[str], precision: str) -> dict:
    """The text-classifier cache key: the model (weights and code), the prompts and the precision."""
    return {**model_key(model), "classnames": classnames, "templates": templates, "precision": precision}


def split_features(model: LazyModel, split: SplitData, rows: np.ndarray, fingerprint: str, split_name: str,
                   config: RunConfig, task: Task) -> np.ndarray | None:
    """Image features of rows ``rows`` (sorted, unique) of one source split, read from the
    cache when a complete entry exists, else encoded (and cached shard by shard). None on
    torchrun ranks other than 0, whose share went to rank 0.

    With a cache, the later models of the run (``model.cohort``) that want the same task results
    and preprocess images the same way are encoded in the same pass into their own entries, so
    the split is decoded once for all of them. Under ``--no-cache`` each model has its own pass.
    """
    cache = FeatureCache(config.cache_dir if config.use_cache else None, config.cache_dtype, config.shard_size)

    def entry_of(m: LazyModel):
        meta = {"model": m.spec.name, "task": task.name, "split": split_name}
        return cache.features(feature_key(m, fingerprint, split_name, rows, config.precision), meta)

    entry = entry_of(model)
    if distributed.broadcast(entry is not None and entry.complete()):
        return entry.load(len(rows)) if distributed.is_main() else None
    model.get()
    # Keyed again once loaded: loading may resolve the weights anew (a hub commit just
    # downloaded), and the features must be filed under what was actually loaded.
    jobs = [FeatureJob(model.get(), entry_of(model))]
    if cache.root is not None and model.cohort is not None:
        candidates = [m for m in model.cohort.after(model, task.name)
                      if not distributed.broadcast(entry_of(m).complete())]
        for peer in model.cohort.load_peers(model, candidates):
            peer_entry = entry_of(peer)
            if not distributed.broadcast(peer_entry.complete()):
                jobs.append(FeatureJob(peer.get(), peer_entry))
        if len(jobs) > 1:
            log.info("%s/%s: one pass for %d models with the same preprocessing: %s", task.name, split_name,
                     len(jobs), ", ".join(getattr(j.model.spec, "name", "?") for j in jobs))
    return extract_shared(
        jobs,
        Rows(split, rows),
        batch_size=config.batch_size,
        workers=config.workers,
        desc=f"{task.name}/{split_name}",
        progress=config.progress,
        precision=config.precision,
        on_bad_image=config.on_bad_image,
        shard_size=config.shard_size,
    )[0]


def _features(model: LazyModel, data: TaskData, config: RunConfig, task: Task) -> tuple[dict, dict, dict]:
    """(features, labels) per role, the number of undecodable images left out per role, and per
    role the boolean mask of the view's rows kept (only for roles that left some out).
    Each source split is encoded once, or read from the cache."""
    out, skipped, kept = {}, {}, {}
    for split_name, split in data.sources.items():
        views = {role: v for role, v in data.views.items() if v.source_split == split_name}
        rows = np.unique(np.concatenate([v.indices for v in views.values()]))
        feats = split_features(model, split, rows, data.fingerprint, split_name, config, task)
        if feats is None:  # a rank other than 0: its share went to rank 0
            continue
        for role, view in views.items():
            x = _rows_of(feats, rows, view.indices)
            good = _nan_free_rows(x)
            if good is not None:
                if config.on_bad_image != "skip":  # NaN rows in a cache written by a skipping run
                    raise EvalbenchError(
                        f"{task.name}/{split_name}: {int((~good).sum())} images could not be decoded "
                        "(cached); pass --on-bad-image skip to leave them out"
                    )
                log.warning("%s/%s: left out %d undecodable images", task.name, role, int((~good).sum()))
                x, labels = x[good], view.labels[good]
                skipped[role] = int((~good).sum())
                kept[role] = good
            else:
                labels = view.labels
            out[role] = (x, labels)
    return out, skipped, kept


def _rows_of(feats: np.ndarray, rows: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The features of ``wanted`` (sorted split row ids ``rows`` index ``feats``): ``feats``
    itself, not a copy, when a view takes every row in order (a 1.28M x 512 float32 split is
    2.6 GB, so each copy matters)."""
    if len(wanted) == len(rows) and np.array_equal(wanted, rows):
        return feats
    return feats[np.searchsorted(rows, wanted)]


def _nan_free_rows(x: np.ndarray, chunk: int = 65536) -> np.ndarray | None:
    """None when every row is finite, else a boolean mask of the rows without NaN (the rows of
    images left out as undecodable). Checked in chunks, so no full-size temporary is made."""
    bad = np.zeros(len(x), dtype=bool)
    for start in range(0, len(x), chunk):
        bad[start : start + chunk] = np.isnan(x[start : start + chunk]).any(axis=1)
    return ~bad if bad.any() else None


def _cached_text(model: LazyModel, config: RunConfig, key_of, encode, meta: dict) -> np.ndarray:
    """Text embeddings from the cache under ``key_of()``, else ``encode(adapter)`` saved there.
    The key is made again once the model is loaded: loading may resolve the weights anew (a hub
    commit just downloaded), and the embeddings are filed under what was actually loaded."""
    cache = FeatureCache(config.cache_dir if config.use_cache else None)
    cached = cache.load_text(key_of())
    if cached is not None:
        return cached
    adapter = model.get()
    key = key_of()
    cached = cache.load_text(key)
    if cached is not None:
        return cached
    out = encode(adapter)
    cache.save_text(key, out, meta)
    return out


def _classifier(model: LazyModel, data: TaskData, config: RunConfig, task: Task) -> torch.Tensor:
    """The zero-shot text classifier, from the cache when the same prompts were encoded before."""

    def encode(adapter) -> np.ndarray:
        with autocast(adapter.device, config.precision), torch.inference_mode():
            classifier = build_zeroshot_classifier(adapter, data.classnames, data.templates, progress=config.progress)
        return classifier.float().cpu().numpy()

    return torch.from_numpy(_cached_text(
        model, config, lambda: classifier_key(model, data.classnames, data.templates, config.precision), encode,
        {"model": model.spec.name, "task": task.name, "classes": len(data.classnames)},
    ))


def text_features(model: LazyModel, texts: list[str], config: RunConfig, task: Task) -> np.ndarray:
    """Caption embeddings, from the cache when the same captions were encoded before."""
    texts_digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()

    def encode(adapter) -> np.ndarray:
        with autocast(adapter.device, config.precision):
            return encode_texts(adapter, texts, progress=config.progress)

    return _cached_text(
        model, config, lambda: {**model_key(model), "texts": texts_digest, "precision": config.precision}, encode,
        {"model": model.spec.name, "task": task.name, "classes": len(texts)},
    )


def _probe(mode: str, feats: dict, data: TaskData, config: RunConfig, task: Task, model: LazyModel,
           backend) -> dict:
    """One probe mode; its result comes from the cache when the same arrays were probed the same
    way before (the C sweep is the slow part of a rerun on cached features)."""
    metric = task.spec.main_metric
    k = int(mode.split("@")[1]) if "@" in mode else None
    cache = FeatureCache(config.cache_dir if config.use_cache else None)
    key = None
    if cache.root is not None:  # hashing the arrays (about 1 GB/s) is only worth it with a cache
        arrays = [a for role in ("train", "val", "test") for a in feats[role]]
        key = {"probe": mode, "backend": backend.name,
               "device": str(model.device) if backend.name == "torch" else "cpu",
               "normalize": config.probe_normalize, "metric": metric, "classnames": data.classnames,
               "seeds": config.seeds if k else None, "evalbench": __version__, "protocol": PROTOCOL_VERSION,
               "arrays": array_digest(*arrays)}
    cached = cache.load_result(key) if key else None
    if cached is not None:
        log.info("%s/%s: probe result from the cache (same features and settings)", task.name, mode)
        return {**cached, "from_cache": True}
    if k is None:
        result = linear_probe(
            feats["train"], feats["val"], feats["test"], len(data.classnames), metric, backend,
            config.probe_normalize, config.progress,
        )
    else:
        result = few_shot_probe(
            feats["train"], feats["val"], feats["test"], data.classnames, metric, k, config.seeds,
            backend, config.probe_normalize, config.progress,
        )
    if key:
        cache.save_result(key, result, {"model": model.spec.name, "task": task.name, "mode": mode,
                                        "n_train": len(feats["train"][1])})
    return result


def caption_pairs(data: TaskData) -> tuple[list[str], np.ndarray]:
    """A retrieval task's test captions, image by image in the order of the test view, and for
    each caption the position of its image in that view."""
    view = data.views["test"]
    captions = data.sources[view.source_split].captions
    texts, text_image = [], []
    for position, row in enumerate(view.indices):
        texts += captions[row]
        text_image += [position] * len(captions[row])
    return texts, np.asarray(text_image, dtype=np.int64)


def zeroshot_result(x: np.ndarray, y: np.ndarray, classifier: torch.Tensor, metric: str,
                    groups: np.ndarray | None) -> dict:
    """A record's ``zeroshot`` result for test features ``x`` and labels ``y``: the metrics,
    ``n`` and, for single-label tasks, the per-sample predictions (and groups)."""
    scores = zeroshot_scores(x, classifier)
    result = classification_metrics(y, scores, metric, groups)
    result["n"] = len(y)
    if y.ndim == 1:
        result["per_sample"] = pack_predictions(scores, y)
        if groups is not None:
            result["per_sample"].update(pack_groups(scores, y, groups))
    return result


def run_retrieval(model: LazyModel, task: Task, config: RunConfig) -> tuple[dict, list[SkippedMode]]:
    """Image-text retrieval metrics on the test split, or a skip when the source lacks it."""
    data = load_task_data(task, ["test"], config.cache_dir, config.limit, config.seed, allow_missing=True)
    modes, not_run = _skip_missing(model, task, ["retrieval"], data)
    if not modes:
        return {}, not_run
    start = time.perf_counter()
    feats, skipped, _ = _features(model, data, config, task)
    if not distributed.is_main():
        return {}, []
    images, _ = feats["test"]
    texts, text_image = caption_pairs(data)
    text_feats = text_features(model, texts, config, task)
    result = retrieval_metrics(images, text_feats, text_image)
    if skipped:
        raise EvalbenchError(f"{task.name}: retrieval cannot leave images out; fix the undecodable images")
    result.update(main_score=result[task.spec.main_metric], n=len(images), n_texts=len(texts),
                  duration_s=round(time.perf_counter() - start, 3), data_fingerprint=data.fingerprint)
    return {"retrieval": result}, []


def run_association(model: LazyModel, task: Task, config: RunConfig) -> dict:
    """Image association (WinoGAViL) on the test split: per question, the candidate images most
    similar to the cue's prompt, scored by Jaccard index (see :mod:`evalbench.association`)."""
    data = load_task_data(task, ["test"], config.cache_dir, config.limit, config.seed)
    start = time.perf_counter()
    feats, skipped, _ = _features(model, data, config, task)
    if not distributed.is_main():
        return {}
    if skipped:
        raise EvalbenchError(f"{task.name}: association cannot leave images out; fix the undecodable images")
    images, _ = feats["test"]
    view = data.views["test"]
    prompts = [cue_prompt(q.cue) for q in data.associations]
    text_feats = text_features(model, prompts, config, task)
    result = association_metrics(images, view.indices, text_feats, data.associations)
    result.update(main_score=result[task.spec.main_metric], n=len(data.associations), n_images=len(images),
                  duration_s=round(time.perf_counter() - start, 3), data_fingerprint=data.fingerprint)
    return {"retrieval": result}


def _test_only(model: LazyModel, task: Task, mode: str, runner) -> tuple[dict, list[SkippedMode]]:
    """``runner()``'s results for a task type that reads only its test split; a test split the
    source lacks skips the task's one ``mode`` (logged and returned) instead of failing the run."""
    try:
        return runner(), []
    except MissingSplitError as e:
        skip = SkippedMode(model.spec.name, task.name, mode, e.split, tuple(e.available), e.where)
        log.warning("%s", skip)
        return {}, [skip]


def run_task(model: LazyModel, task: Task, modes: list[str], config: RunConfig) -> tuple[dict, list[SkippedMode]]:
    """Results per mode for one (model, task), and the modes not run because the task's source
    lacks a split they need (a missing train or val skips the probes, a missing test every
    mode). Every other error raises."""
    if task.spec.type == "retrieval":
        return run_retrieval(model, task, config)
    if task.spec.type == "association":
        return _test_only(model, task, "retrieval", lambda: run_association(model, task, config))
    if task.spec.type == "matching":
        from evalbench.matching import run_matching  # matching.py builds on this module's helpers

        return _test_only(model, task, "zeroshot", lambda: run_matching(model, task, config))
    data = load_task_data(task, _roles(modes), config.cache_dir, config.limit, config.seed, allow_missing=True)
    modes, not_run = _skip_missing(model, task, modes, data)
    if not modes:
        return {}, not_run
    if "zeroshot" in modes and not data.templates:
        raise EvalbenchError(f"{task.path}: templates: missing, and the data ships none (zero-shot needs them)")
    metric = task.spec.main_metric
    if metric in GROUP_METRICS and any(m.startswith("linear_probe") for m in modes) and task.spec.splits.train:
        raise EvalbenchError(f"{task.path}: main_metric: {metric} is scored on zero-shot predictions only "
                             "(the linear probe does not see groups); run with --mode zeroshot")
    feats, skipped, kept = _features(model, data, config, task)
    if not distributed.is_main():
        return {}, not_run
    results = {}
    if "zeroshot" in modes:
        start = time.perf_counter()
        classifier = _classifier(model, data, config, task)
        x, y = feats["test"]
        groups = data.views["test"].groups
        if groups is not None and "test" in kept:
            groups = groups[kept["test"]]
        results["zeroshot"] = zeroshot_result(x, y, classifier, metric, groups)
        results["zeroshot"]["duration_s"] = round(time.perf_counter() - start, 3)
    backend = make_backend(config.probe_backend, str(model.device))
    for mode in modes:
        if not mode.startswith("linear_probe"):
            continue
        start = time.perf_counter()
        result = _probe(mode, feats, data, config, task, model, backend)
        results[mode] = {**result, "duration_s": round(time.perf_counter() - start, 3)}
    for result in results.values():
        # Per mode, since a record may keep modes computed earlier: which data each one read
        # (for hub data on a branch, this follows the commit that was downloaded).
        result["data_fingerprint"] = data.fingerprint
        if skipped:
            result["skipped_images"] = skipped
    return results, not_run
