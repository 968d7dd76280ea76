"""From a task to labelled splits: the source's data with labels mapped onto the task's classes.

This is where class names meet the data. Labels are matched by name wherever the source carries
label names; bare integer labels are used only when the task says ``label_match: index``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.sources.base import Association, Source, SplitData, source_class
from evalbench.tasks.loader import Task
from evalbench.tasks.spec import ValFraction

log = logging.getLogger(__name__)

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
            mapping = np.asarray(subset)
        elif count > len(classnames) or (label_names is not None and count != len(classnames)):
            expected = f"{len(subset)} (the subset) or {len(classnames)}" if subset else str(len(classnames))
            raise EvalbenchError(f"{task.path}: classnames: the task has {expected} classes but the data has {count} labels")
        else:
            mapping = np.arange(max(count, 1))
        if label_names is not None:
            check_index_order(task, classnames, label_names, mapping)
        return mapping
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


def _name_forms(name: str) -> set[str]:
    """The normalised forms a class name is known by: the whole name and its first
    comma-separated synonym (ImageNet copies on the hub name class 0 "tench, Tinca tinca")."""
    return {normalise_name(name), normalise_name(name.split(",")[0])}


def check_index_order(task: Task, classnames: list[str], label_names: list[str], mapping: np.ndarray) -> None:
    """For ``label_match: index`` data that ships its own class names: stop when they show the
    labels are in another order than the task's classes.

    Data label i names task class ``mapping[i]`` when one of its forms (whole name, first
    synonym; case, underscores and spacing ignored) equals a form of that class's ``classnames``
    or ``label_names`` entry. A name matching none of the task's classes says nothing (CLIP renamed
    about 300 ImageNet classes: "Cardigan, Cardigan Welsh corgi" is its "Cardigan Welsh Corgi";
    folders may be WordNet ids), so it is accepted. Label i is out of order when its name matches
    not its own class but another class j whose own data label does not match j either (so
    "Cardigan, Cardigan Welsh corgi" is no evidence against 264 while label 474 is "cardigan").
    A shuffled order therefore fails at its first displaced label; raises EvalbenchError naming the
    task file, the field, that label and both names.
    """
    spec = task.spec
    field = "label_names" if spec.label_names else "classnames"
    shown = spec.label_names or classnames
    forms = [_name_forms(c) | (_name_forms(spec.label_names[k]) if spec.label_names else set())
             for k, c in enumerate(classnames)]
    owners: dict[str, set[int]] = {}
    for k, known in enumerate(forms):
        for form in known:
            owners.setdefault(form, set()).add(k)
    data_forms = [_name_forms(n) for n in label_names]
    holder = {int(k): i for i, k in enumerate(mapping)}  # task class -> the data label said to be it

    def names_class(i: int, k: int) -> bool:
        return bool(data_forms[i] & forms[k])

    def filled(k: int) -> bool:
        return k in holder and names_class(holder[k], k)

    matched_any = False
    for i, k in enumerate(int(m) for m in mapping):
        others = set().union(*(owners.get(f, set()) for f in data_forms[i]))
        matched_any = matched_any or bool(others)
        if k in others:
            continue
        elsewhere = sorted(j for j in others if not filled(j))
        if elsewhere:
            raise EvalbenchError(
                f"{task.path}: {field}: label_match is index, but label {i} of the data is named "
                f"'{label_names[i]}' while {field}[{k}] is '{shown[k]}' (the data's name is that of "
                f"{field}[{elsewhere[0]}], '{shown[elsewhere[0]]}'): the data's labels are not in the order of {field}"
            )
    if not matched_any:
        log.info("%s: the data's class names (%s, ...) match none of the task's; label order taken on trust "
                 "(label_match: index)", task.name, label_names[0])


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
    """Rows ``indices`` of a source split, with labels in the task's class order, and for a task
    with ``group_by`` the group of each row (strings)."""

    source_split: str
    indices: np.ndarray
    labels: np.ndarray
    ids: list[str] | None
    groups: np.ndarray | None = None


@dataclass
class TaskData:
    """Everything the runners need from a task's data, before any model sees it."""

    classnames: list[str]
    templates: list[str] | None
    sources: dict[str, SplitData]  # source split name -> data (each extracted once)
    views: dict[str, SplitView]  # 'train' / 'val' / 'test' -> rows of a source split
    fingerprint: str
    # role -> why it has no view: the source lacks its split (only with allow_missing=True)
    missing: dict[str, MissingSplitError] = field(default_factory=dict)
    associations: list[Association] | None = None  # association tasks: the questions scored


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
    """Carve ``val.fraction`` of the train rows out as validation rows, stratified by label when
    every class has two images and both parts can hold one of each class; otherwise (tiny
    ``--limit`` runs, many classes) a plain seeded split, with a warning."""
    stratify = None
    if labels.ndim == 1:
        classes, counts = np.unique(labels, return_counts=True)
        held = int(np.ceil(val.fraction * len(indices)))
        if counts.min() >= 2 and min(held, len(indices) - held) >= len(classes):
            stratify = labels
        else:
            log.warning("val fraction %.2g of %d images cannot hold every one of %d classes: split unstratified",
                        val.fraction, len(indices), len(classes))
    train, held = train_test_split(indices, test_size=val.fraction, random_state=val.seed, stratify=stratify)
    return np.sort(train), np.sort(held)


def load_task_data(
    task: Task, roles: list[str], cache_dir: Path, limit: int | None = None, seed: int = 0,
    allow_missing: bool = False,
) -> TaskData:
    """Load the splits behind ``roles`` (a subset of train/val/test) and map their labels.

    Errors from the source are prefixed with the task file, like every task error. A split the
    source does not have raises :class:`MissingSplitError`; with ``allow_missing`` it is instead
    recorded in ``TaskData.missing`` under each role it would have served (a val fraction is
    served by train), those roles get no view, and the other roles load as usual.
    """
    try:
        data = _load_task_data(task, roles, cache_dir, limit, seed, allow_missing)
    except MissingSplitError as e:
        raise e.for_task(task.name, _prefix(task, e)) from None
    except EvalbenchError as e:
        if str(e).startswith(str(task.path)):
            raise
        raise EvalbenchError(f"{task.path}: {e}") from None
    data.missing = {role: e.for_task(task.name, _prefix(task, e)) for role, e in data.missing.items()}
    return data


def _prefix(task: Task, e: EvalbenchError) -> str:
    return "" if str(e).startswith(str(task.path)) else f"{task.path}: "


def _load_task_data(
    task: Task, roles: list[str], cache_dir: Path, limit: int | None, seed: int, allow_missing: bool
) -> TaskData:
    spec = task.spec
    source = open_source(task, cache_dir)
    takes_classes = spec.type not in ("retrieval", "association")
    classnames = (spec.classnames or source.classnames()) if takes_classes else []
    if not classnames and takes_classes:
        raise EvalbenchError(f"{task.path}: classnames: missing, and the data ships none")
    templates = (spec.templates or source.templates()) if takes_classes else None
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
    sources, missing = {}, {}
    for name in sorted(wanted):
        try:
            sources[name] = source.load_split(name)
        except MissingSplitError as e:
            if not allow_missing:
                raise
            missing[name] = e
    # A role is missing when the split it reads is: its own, or train for a val fraction.
    reads = {r: names["train"] if r == "val" and isinstance(val, ValFraction) else names.get(r) for r in roles}
    missing_roles = {r: missing[s] for r, s in reads.items() if s in missing}

    views: dict[str, SplitView] = {}
    if spec.type == "association":
        if spec.splits.test in missing:
            raise missing[spec.splits.test]
        return _association_data(task, sources[spec.splits.test], spec.splits.test, source, limit, seed)
    for name, data in sources.items():
        if spec.label_field:
            data = sources[name] = _labels_from_metadata(task, name, data)
        groups = _groups(task, name, data) if spec.group_by else None
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

        def view(r: np.ndarray) -> SplitView:
            return SplitView(name, r, labels[r], data.ids, None if groups is None else groups[r])

        if "val" in roles and isinstance(val, ValFraction) and name == names["train"]:
            train_rows, val_rows = _split_off(rows, labels[rows], val)
            views["train"], views["val"] = view(train_rows), view(val_rows)
        for role in ("train", "val", "test"):
            if names.get(role) == name and role not in views:
                views[role] = view(rows)
    _check_disjoint(task, views)
    if spec.groups is not None and "test" in views:
        _check_groups(task, views["test"], limited=limit is not None)
    return TaskData(classnames, templates, sources, views, source.fingerprint(), missing_roles)


def _labels_from_metadata(task: Task, split: str, data: SplitData) -> SplitData:
    """The split with its labels read from the metadata field ``label_field``: integers as they
    are (matched by index), strings as names (sorted, matched by name like any named labels)."""
    field = task.spec.label_field
    values = _field_values(task, split, data, field, "label_field")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return replace(data, labels=[int(v) for v in values], label_names=None)
    names = sorted({str(v) for v in values})
    index = {n: i for i, n in enumerate(names)}
    return replace(data, labels=[index[str(v)] for v in values], label_names=names)


def _field_values(task: Task, split: str, data: SplitData, field: str, key: str) -> list:
    """Every sample's value of metadata ``field``; EvalbenchError naming ``key`` and the first
    sample that lacks it."""
    metadata = data.metadata or [None] * len(data.labels)
    values = []
    for i, meta in enumerate(metadata):
        if meta is None or field not in meta or meta[field] is None or meta[field] == "":
            which = data.ids[i] if data.ids else f"row {i}"
            have = f" (its fields: {', '.join(map(str, meta))})" if meta else " (it has no metadata)"
            raise EvalbenchError(f"{task.path}: {key}: sample '{which}' of split '{split}' has no field '{field}'{have}")
        values.append(meta[field])
    return values


def _groups(task: Task, split: str, data: SplitData) -> np.ndarray:
    """The group of every sample of a split (``group_by``), as strings: WILDS codes groups as
    integers, JSON and CSV metadata as strings or numbers, and a record keys groups by text."""
    values = _field_values(task, split, data, task.spec.group_by, "group_by")
    return np.asarray([str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in values])


def _check_groups(task: Task, view: SplitView, limited: bool) -> None:
    """Every group the task lists has test images, and the test images have no other group: a
    worst-group number over fewer groups than the task names would look better than it is.
    Under ``--limit`` (a subset) a missing group is only a warning."""
    declared = list(task.spec.groups)
    present = set(view.groups.tolist())
    extra = sorted(present - set(declared))
    if extra:
        raise EvalbenchError(f"{task.path}: groups: the data has group '{extra[0]}', which the task does not list")
    empty = [g for g in declared if g not in present]
    if empty:
        message = f"{task.path}: groups: group '{empty[0]}' has no samples in split '{view.source_split}'"
        if not limited:
            raise EvalbenchError(message)
        log.warning("%s (under --limit)", message)


def _association_data(task: Task, data: SplitData, name: str, source: Source, limit: int | None,
                      seed: int) -> TaskData:
    """An association task's test data: a seeded subset of the questions under ``limit``, and the
    rows of their candidate images."""
    if data.associations is None:
        raise EvalbenchError(f"{task.path}: dataset: type association needs cues and candidates "
                             f"(dataset.cue_column), and split '{name}' has none")
    chosen = [data.associations[i] for i in seeded_rows(len(data.associations), limit, seed)]
    rows = np.unique(np.fromiter((r for q in chosen for r in q.images), dtype=np.int64))
    view = SplitView(name, rows, np.zeros(len(rows), dtype=np.int64), data.ids)
    return TaskData([], None, {name: data}, {"test": view}, source.fingerprint(), associations=chosen)


def _check_disjoint(task: Task, views: dict[str, SplitView]) -> None:
    """Fail if the test rows overlap train or val rows of the same source split (a leak)."""
    test = views.get("test")
    for role in ("train", "val"):
        other = views.get(role)
        if test and other and other.source_split == test.source_split:
            if np.intersect1d(test.indices, other.indices).size:
                raise EvalbenchError(f"{task.path}: splits.{role}: shares images with splits.test")
