"""Matching tasks (compositionality benchmarks): one image against candidate captions
(SugarCrepe, ARO), or Winoground's 2x2 groups of images and captions.

A task has one part (its ``dataset``) or one per entry of ``subsets:``. Each part's test items
are loaded, their images encoded once through the feature cache and the task's captions once
through the text cache (keyed by the model and a digest of the caption set), and every item is
scored by cosine similarity. The result, under the record's ``zeroshot`` mode: the metrics over
all items, ``per_subset`` (``{subset: {metric: value, n: items}}``) and ``main_score``, the
macro average over subsets of the main metric. Items without a subset form the subset ``all``.
``--limit N`` keeps a seeded N items of each part.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from evalbench import distributed
from evalbench.config import RunConfig
from evalbench.data import seeded_rows
from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.metrics import caption_choice, macro_average, per_subset, winoground_outcomes
from evalbench.models import LazyModel
from evalbench.records import pack_matching
from evalbench.runners import split_features, text_features
from evalbench.sources.base import MatchItem, SplitData, source_class
from evalbench.tasks.loader import Task, deep_merge

log = logging.getLogger(__name__)

NO_SUBSET = "all"
CHUNK = 8192  # items scored at a time: bounds the (items, candidates, dim) gather


@dataclass
class Part:
    """One part of a matching task: the items kept (after ``--limit``), the split holding their
    images, the split rows those images are, and the data's fingerprint."""

    name: str | None
    split: SplitData
    items: list[MatchItem]
    rows: np.ndarray
    fingerprint: str


def task_parts(task: Task) -> list[tuple[str | None, dict]]:
    """(subset name or None, dataset mapping) per part: the task's ``dataset``, or that mapping
    with each ``subsets`` entry merged over it."""
    if not task.spec.subsets:
        return [(None, task.spec.dataset)]
    return [(name, deep_merge(task.spec.dataset, override)) for name, override in task.spec.subsets.items()]


def load_parts(task: Task, config: RunConfig) -> list[Part]:
    """Every part's test items; EvalbenchError, prefixed with the task file, for a source that
    cannot hold matching items or malformed data."""
    parts = []
    split_name = task.spec.splits.test
    for name, dataset in task_parts(task):
        field = f"subsets.{name}" if name else "dataset"
        cls = source_class(dataset["source"])
        source = cls(cls.Config.model_validate(dataset), task.dir, config.cache_dir)
        if not hasattr(source, "load_matching"):
            raise EvalbenchError(
                f"{task.path}: {field}.source: '{dataset['source']}' cannot hold matching items (use jsonl, webdataset or hf)"
            )
        try:
            split = source.load_matching(split_name)
        except MissingSplitError as e:
            raise e.for_task(task.name, f"{task.path}: ") from None
        except EvalbenchError as e:
            if str(e).startswith(str(task.path)):
                raise
            raise EvalbenchError(f"{task.path}: {e}") from None
        keep = seeded_rows(len(split.items), config.limit, config.seed)
        items = [split.items[i] if name is None else replace(split.items[i], subset=name) for i in keep]
        rows = np.unique(np.fromiter((r for item in items for r in item.images), dtype=np.int64))
        parts.append(Part(name, split, items, rows, source.fingerprint()))
    return parts


def _fingerprint(parts: list[Part]) -> str:
    if len(parts) == 1:
        return parts[0].fingerprint
    joined = ";".join(f"{p.name}={p.fingerprint}" for p in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _check_kind(task: Task, items: list[MatchItem]) -> bool:
    """True for Winoground groups, False for one image per item; EvalbenchError for a mix, or
    a main metric that does not fit the items."""
    kinds = {len(item.images) for item in items}
    if len(kinds) > 1:
        raise EvalbenchError(f"{task.path}: dataset: the items mix 2x2 groups and single images; a task holds one kind")
    group = kinds == {2}
    metric = task.spec.main_metric
    if group != (metric != "acc"):
        want = "text_score, image_score or group_score" if group else "acc"
        kind = "2x2 groups" if group else "one image per item"
        raise EvalbenchError(f"{task.path}: main_metric: {metric} does not fit the data ({kind}); use {want}")
    return group


def item_scores(items: list[MatchItem], image_pos: list[np.ndarray], images: torch.Tensor,
                texts: torch.Tensor, text_index: dict[str, int]) -> np.ndarray:
    """Cosine similarities per item: (n, max candidates) padded with -inf for single images,
    or (n, caption, image) for 2x2 groups. ``image_pos[i]`` are item i's rows of ``images``;
    both feature matrices are L2-normalised."""
    width = max(len(item.captions) for item in items)
    captions = np.full((len(items), width), -1, dtype=np.int64)
    for i, item in enumerate(items):
        captions[i, : len(item.captions)] = [text_index[c] for c in item.captions]
    pos = np.stack(image_pos)
    parts = []
    for start in range(0, len(items), CHUNK):
        c = torch.from_numpy(captions[start : start + CHUNK])
        p = torch.from_numpy(pos[start : start + CHUNK])
        txt = texts[c.clamp(min=0)]  # (n, candidates, dim)
        img = images[p]  # (n, images, dim)
        if pos.shape[1] == 2:
            parts.append(torch.einsum("ncd,nid->nci", txt, img).numpy())
        else:
            s = torch.einsum("ncd,nd->nc", txt, img[:, 0]).double()
            parts.append(s.masked_fill(c < 0, float("-inf")).numpy())
    return np.concatenate(parts)


def matching_result(items: list[MatchItem], scores: np.ndarray, group: bool, metric: str) -> dict:
    """The metrics over all items, per subset, the main score (macro average over subsets) and
    the per-item outcomes of the main metric (for paired statistics in reports)."""
    if group:
        outcomes = winoground_outcomes(scores)
    else:
        correct, tie = caption_choice(scores, np.array([item.label for item in items]))
        outcomes = {"acc": correct, "ties": tie.astype(np.int64)}
    subsets = np.array([item.subset or NO_SUBSET for item in items])
    by_subset = per_subset(outcomes, subsets)
    overall = {m: float(v.mean()) if v.dtype == bool else int(v.sum()) for m, v in outcomes.items()}
    names = sorted(by_subset)
    ids = np.searchsorted(np.array(names), subsets)
    return {**overall, "main_score": macro_average(by_subset, metric), "per_subset": by_subset,
            "per_sample": pack_matching(outcomes[metric], ids, names)}


def run_matching(model: LazyModel, task: Task, config: RunConfig) -> dict:
    """``{"zeroshot": result}`` for a matching task (see the module docstring)."""
    parts = load_parts(task, config)
    items = [item for part in parts for item in part.items]
    if not items:
        raise EvalbenchError(f"{task.path}: dataset: no items")
    group = _check_kind(task, items)
    start = time.perf_counter()
    feats = []
    for part in parts:
        name = f"{task.spec.splits.test}" if part.name is None else f"{task.spec.splits.test}/{part.name}"
        feats.append(split_features(model, part.split, part.rows, part.fingerprint, name, config, task))
    if not distributed.is_main():
        return {}
    if any(np.isnan(f).any() for f in feats):
        raise EvalbenchError(f"{task.name}: matching cannot leave images out; fix the undecodable images")
    offsets = np.cumsum([0] + [len(p.rows) for p in parts])
    image_pos = [offsets[k] + np.searchsorted(part.rows, item.images) for k, part in enumerate(parts)
                 for item in part.items]
    texts = list(dict.fromkeys(c for item in items for c in item.captions))
    text_index = {t: i for i, t in enumerate(texts)}
    images = F.normalize(torch.from_numpy(np.concatenate(feats)).float(), dim=-1)
    text_emb = F.normalize(torch.from_numpy(text_features(model, texts, config, task)).float(), dim=-1)
    scores = item_scores(items, image_pos, images, text_emb, text_index)
    result = matching_result(items, scores, group, task.spec.main_metric)
    result.update(n=len(items), n_images=int(offsets[-1]), n_texts=len(texts),
                  duration_s=round(time.perf_counter() - start, 3), data_fingerprint=_fingerprint(parts))
    return {"zeroshot": result}
