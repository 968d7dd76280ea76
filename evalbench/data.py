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


def normalise_name(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().lower()


def label_mapping(task: Task, classnames: list[str], label_names: list[str] | None, n_labels: int) -> np.ndarray:
    """``mapping[source_label] = task_class`` for every label the source can emit."""
    spec = task.spec
    if spec.label_match == "index" or label_names is None:
        if spec.label_match != "index":
            raise EvalbenchError(
                f"{task.path}: label_match: the data carries integer labels without names; "
                "set `label_match: index` if its label order is that of classnames"
            )
        count = len(label_names) if label_names is not None else n_labels
        if count > len(classnames):
            raise EvalbenchError(
                f"{task.path}: classnames: {len(classnames)} class names but the data has {count} labels"
            )
        return np.arange(max(count, 1))
    keys = spec.label_names or classnames
    where = {normalise_name(k): i for i, k in enumerate(keys)}
    if len(where) != len(keys):
        field = "label_names" if spec.label_names else "classnames"
        raise EvalbenchError(
            f"{task.path}: {field}: names are not unique after normalisation; give distinct label_names"
        )
    if len(label_names) != len(keys):
        raise EvalbenchError(
            f"{task.path}: classnames: {len(keys)} classes in the task but {len(label_names)} labels in the data"
        )
    missing = [n for n in label_names if normalise_name(n) not in where]
    if missing:
        field = "label_names" if spec.label_names else "classnames"
        raise EvalbenchError(
            f"{task.path}: {field}: data labels not found among the task's names: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} (set label_names to the data's own names)"
        )
    return np.array([where[normalise_name(n)] for n in label_names])


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
    mappings: dict[str, np.ndarray]  # source split name -> source label -> task class
    views: dict[str, SplitView]  # 'train' / 'val' / 'test' -> rows of a source split
    fingerprint: str


class MappedDataset(Dataset):
    """A source split restricted to ``indices``; yields (image, task label)."""

    def __init__(self, data: SplitData, indices: np.ndarray, mapping: np.ndarray):
        self.data, self.indices, self.mapping = data, indices, mapping

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.data.dataset[int(self.indices[i])]
        return image, int(self.mapping[label])


def open_source(task: Task, cache_dir: Path) -> Source:
    cls = source_class(task.spec.dataset["source"])
    try:
        config = cls.Config.model_validate(task.spec.dataset)
    except ValidationError as e:  # validated at load already; kept for programmatic TaskSpecs
        raise EvalbenchError(f"{task.path}: dataset: {e.errors()[0]['msg']}") from None
    return cls(config, task.dir, cache_dir)


def _subset(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _split_off(indices: np.ndarray, labels: np.ndarray, val: ValFraction) -> tuple[np.ndarray, np.ndarray]:
    counts = np.unique(labels, return_counts=True)[1]
    stratify = labels if counts.min() >= 2 else None
    train, held = train_test_split(indices, test_size=val.fraction, random_state=val.seed, stratify=stratify)
    return np.sort(train), np.sort(held)


def load_task_data(task: Task, roles: list[str], cache_dir: Path, limit: int | None = None, seed: int = 0) -> TaskData:
    """Load the splits behind ``roles`` (a subset of train/val/test) and map their labels."""
    spec = task.spec
    source = open_source(task, cache_dir)
    classnames = spec.classnames or source.classnames()
    if not classnames:
        raise EvalbenchError(f"{task.path}: classnames: missing, and the data ships none")
    templates = spec.templates or source.templates()

    names = {"test": spec.splits.test, "train": spec.splits.train}
    if isinstance(spec.splits.val, str):
        names["val"] = spec.splits.val
    wanted = {names[r] for r in roles if names.get(r)}
    if "val" in roles and isinstance(spec.splits.val, ValFraction):
        wanted.add(names["train"])
    sources = {name: source.load_split(name) for name in sorted(wanted)}

    mappings: dict[str, np.ndarray] = {}
    views: dict[str, SplitView] = {}
    for name, data in sources.items():
        mappings[name] = label_mapping(task, classnames, data.label_names, max(data.labels, default=-1) + 1)
        labels = mappings[name][np.asarray(data.labels)]
        rows = _subset(labels, limit, seed)
        if "val" in roles and isinstance(spec.splits.val, ValFraction) and name == names["train"]:
            train_rows, val_rows = _split_off(rows, labels[rows], spec.splits.val)
            views["train"] = SplitView(name, train_rows, labels[train_rows], data.ids)
            views["val"] = SplitView(name, val_rows, labels[val_rows], data.ids)
        for role in ("train", "val", "test"):
            if names.get(role) == name and role not in views:
                views[role] = SplitView(name, rows, labels[rows], data.ids)
    _check_disjoint(task, views)
    return TaskData(classnames, templates, sources, mappings, views, source.fingerprint())


def _check_disjoint(task: Task, views: dict[str, SplitView]) -> None:
    """Fail if the test rows overlap train or val rows of the same source split (a leak)."""
    test = views.get("test")
    for role in ("train", "val"):
        other = views.get(role)
        if test and other and other.source_split == test.source_split:
            if np.intersect1d(test.indices, other.indices).size:
                raise EvalbenchError(f"{task.path}: splits.{role}: shares images with splits.test")
