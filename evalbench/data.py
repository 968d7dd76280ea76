"""From a task to labelled splits: the source's data with labels mapped onto the task's classes.

This is where class names meet the data. Labels are matched by name wherever the source carries
label names; bare integer labels are used only when the task says ``label_match: index``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from evalbench.errors import EvalbenchError
from evalbench.sources.base import Source, SplitData, source_class
from evalbench.tasks.loader import Task
from evalbench.tasks.spec import ValFraction


DEFAULT_VAL = ValFraction(fraction=0.2, seed=0)


def normalise_name(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def label_mapping(task: Task, classnames: list[str], label_names: list[str] | None, n_labels: int) -> np.ndarray:
    """``mapping[source_label] = task_class`` (an index into ``classnames``) for every label the
    source can emit.

    By name (the default): when the data's names equal the task's names (or those of its class
    subset) in order, label i is class i; otherwise each data name must match exactly one task
    name. By index (``label_match: index``): label i is class i, or the i-th class of the subset
    when the data has as many labels as the subset.
    """
    spec = task.spec
    subset = spec.class_subset
    if spec.label_match == "index":
        count = len(label_names) if label_names is not None else n_labels
        if subset and count == len(subset):
            return np.asarray(subset)
        if count > len(classnames) or (label_names is not None and count != len(classnames)):
            expected = f"{len(subset)} (the subset) or {len(classnames)}" if subset else str(len(classnames))
            raise EvalbenchError(f"{task.path}: classnames: the task has {expected} classes but the data has {count} labels")
        return np.arange(max(count, 1))
    if label_names is None:
        raise EvalbenchError(
            f"{task.path}: label_match: the data carries integer labels without names; "
            "set `label_match: index` if its label order is that of classnames"
        )
    keys = spec.label_names or classnames
    field = "label_names" if spec.label_names else "classnames"
    data_names = [normalise_name(n) for n in label_names]
    task_names = [normalise_name(k) for k in keys]
    if data_names == task_names:
        return np.arange(len(keys))
    if subset and data_names == [task_names[i] for i in subset]:
        return np.asarray(subset)
    expected = len(subset) if subset else len(keys)
    if len(label_names) not in {expected, len(keys)}:
        raise EvalbenchError(
            f"{task.path}: {field}: the task has {expected} classes but the data has {len(label_names)} labels"
        )
    where: dict[str, list[int]] = {}
    for i, name in enumerate(task_names):
        where.setdefault(name, []).append(i)
    missing = [n for n, d in zip(label_names, data_names) if d not in where]
    if missing:
        raise EvalbenchError(
            f"{task.path}: {field}: data labels not found among the task's names: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} (set label_names to the data's own names)"
        )
    ambiguous = [n for n, d in zip(label_names, data_names) if len(where[d]) > 1]
    if ambiguous:
        raise EvalbenchError(
            f"{task.path}: {field}: '{ambiguous[0]}' names more than one class; give the data's own names in label_names"
        )
    return np.array([where[d][0] for d in data_names])


def restrict_to_subset(task: Task, mapping: np.ndarray, subset: list[int]) -> np.ndarray:
    """Compose ``mapping`` with the class subset: labels become positions in ``subset``, and
    classes outside it become -1."""
    position = np.full(len(task.spec.classnames), -1)
    position[subset] = np.arange(len(subset))
    return position[mapping]


def task_labels(task: Task, raw: list, mapping: np.ndarray, n_classes: int) -> np.ndarray:
    """Task-space labels of a split: (n,) class indices, or an (n, n_classes) 0/1 matrix for
    multi-label tasks."""
    if task.spec.type == "multilabel":
        out = np.zeros((len(raw), n_classes), dtype=np.int64)
        for row, labels in enumerate(raw):
            mapped = mapping[np.asarray(labels, dtype=np.int64)]
            out[row, mapped[mapped >= 0]] = 1
        return out
    labels = mapping[np.asarray(raw, dtype=np.int64)]
    if labels.size and labels.min() < 0:
        raise EvalbenchError(f"{task.path}: class_subset: the data has images of classes outside the subset")
    return labels


@dataclass
class SplitView:
    """Rows ``indices`` of a source split, with labels in the task's class order."""

    source_split: str
    indices: np.ndarray
    labels: np.ndarray
    ids: list[str] | None


@dataclass
class TaskData:
    """Everything the runners need from a task's data, before any model sees it."""

    classnames: list[str]
    templates: list[str] | None
    sources: dict[str, SplitData]  # source split name -> data (each extracted once)
    views: dict[str, SplitView]  # 'train' / 'val' / 'test' -> rows of a source split
    fingerprint: str


class Rows(Dataset):
    """A source split restricted to ``indices``; yields images."""

    def __init__(self, data: SplitData, indices: np.ndarray):
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.data.dataset[int(self.indices[i])][0]

    def describe(self, i: int) -> str:
        row = int(self.indices[i])
        return f"image {row} ({self.data.ids[row]})" if self.data.ids else f"image {row}"


def open_source(task: Task, cache_dir: Path) -> Source:
    cls = source_class(task.spec.dataset["source"])
    try:
        config = cls.Config.model_validate(task.spec.dataset)
    except ValidationError as e:  # validated at load already; kept for programmatic TaskSpecs
        raise EvalbenchError(f"{task.path}: dataset: {e.errors()[0]['msg']}") from None
    return cls(config, task.dir, cache_dir)


def seeded_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of range(n), or a seeded sorted sample of ``limit`` of them (``--limit``)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _split_off(indices: np.ndarray, labels: np.ndarray, val: ValFraction) -> tuple[np.ndarray, np.ndarray]:
    stratify = None
    if labels.ndim == 1 and np.unique(labels, return_counts=True)[1].min() >= 2:
        stratify = labels
    train, held = train_test_split(indices, test_size=val.fraction, random_state=val.seed, stratify=stratify)
    return np.sort(train), np.sort(held)


def load_task_data(task: Task, roles: list[str], cache_dir: Path, limit: int | None = None, seed: int = 0) -> TaskData:
    """Load the splits behind ``roles`` (a subset of train/val/test) and map their labels.
    Errors from the source are prefixed with the task file, like every task error."""
    try:
        return _load_task_data(task, roles, cache_dir, limit, seed)
    except EvalbenchError as e:
        if str(e).startswith(str(task.path)):
            raise
        raise EvalbenchError(f"{task.path}: {e}") from None


def _load_task_data(task: Task, roles: list[str], cache_dir: Path, limit: int | None, seed: int) -> TaskData:
    spec = task.spec
    source = open_source(task, cache_dir)
    classnames = [] if spec.type == "retrieval" else spec.classnames or source.classnames()
    if not classnames and spec.type != "retrieval":
        raise EvalbenchError(f"{task.path}: classnames: missing, and the data ships none")
    templates = spec.templates or source.templates()
    if spec.class_subset:
        classnames = [classnames[i] for i in spec.class_subset]

    names = {"test": spec.splits.test, "train": spec.splits.train}
    # Without a val split, the probe chooses C on a seeded 20% of train (DEFAULT_VAL).
    val = spec.splits.val if spec.splits.val is not None else DEFAULT_VAL
    if isinstance(val, str):
        names["val"] = val
    wanted = {names[r] for r in roles if names.get(r)}
    if "val" in roles and isinstance(val, ValFraction):
        wanted.add(names["train"])
    sources = {name: source.load_split(name) for name in sorted(wanted)}

    views: dict[str, SplitView] = {}
    for name, data in sources.items():
        if spec.type == "retrieval":
            if data.captions is None:
                raise EvalbenchError(f"{task.path}: dataset: type retrieval needs captions, and split '{name}' has none")
            rows = seeded_rows(len(data.captions), limit, seed)
            views["test"] = SplitView(name, rows, np.zeros(len(rows), dtype=np.int64), data.ids)
            continue
        flat = [x for y in data.labels for x in y] if spec.type == "multilabel" else data.labels
        mapping = label_mapping(task, spec.classnames or classnames, data.label_names, max(flat, default=-1) + 1)
        if spec.class_subset:
            mapping = restrict_to_subset(task, mapping, spec.class_subset)
        labels = task_labels(task, data.labels, mapping, len(classnames))
        rows = seeded_rows(len(labels), limit, seed)
        if "val" in roles and isinstance(val, ValFraction) and name == names["train"]:
            train_rows, val_rows = _split_off(rows, labels[rows], val)
            views["train"] = SplitView(name, train_rows, labels[train_rows], data.ids)
            views["val"] = SplitView(name, val_rows, labels[val_rows], data.ids)
        for role in ("train", "val", "test"):
            if names.get(role) == name and role not in views:
                views[role] = SplitView(name, rows, labels[rows], data.ids)
    _check_disjoint(task, views)
    return TaskData(classnames, templates, sources, views, source.fingerprint())


def _check_disjoint(task: Task, views: dict[str, SplitView]) -> None:
    """Fail if the test rows overlap train or val rows of the same source split (a leak)."""
    test = views.get("test")
    for role in ("train", "val"):
        other = views.get(role)
        if test and other and other.source_split == test.source_split:
            if np.intersect1d(test.indices, other.indices).size:
                raise EvalbenchError(f"{task.path}: splits.{role}: shares images with splits.test")
