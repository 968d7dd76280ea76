"""Published zero-shot figures of open_clip's pretrained checkpoints, shipped as package data.

``openclip_results.csv`` is open_clip's 38-dataset table (one row per architecture and
pretrained tag, values as fractions); ``columns.yaml`` maps each of its dataset columns to an
evalbench task name and the metric of the figure, once, as data. See ``README.md`` here for the
source and licence.

    >>> lookup("ViT-B-32", "openai", "imagenet1k")
    0.6332
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

DATA_DIR = Path(__file__).resolve().parent
RESULTS_CSV = DATA_DIR / "openclip_results.csv"
COLUMNS_YAML = DATA_DIR / "columns.yaml"
SOURCE = "open_clip's published zero-shot results (docs/openclip_results.csv, MIT)"

# Columns of the table that identify a checkpoint or describe it, not a dataset's figure.
KEY_COLUMNS = ("name", "pretrained")
NOT_DATASETS = ("params (M)", "FLOPs (B)", "Average perf. on 38 datasets")


@dataclass(frozen=True)
class PublishedColumn:
    """One dataset column of the table: its header, the evalbench task and the figure's metric."""

    column: str
    task: str
    metric: str


@lru_cache(maxsize=1)
def columns() -> dict[str, PublishedColumn]:
    """``columns.yaml`` by task name. ValueError if it does not map every dataset column of the
    table exactly once (a packaging mistake, not a user's)."""
    mapping = yaml.safe_load(COLUMNS_YAML.read_text(encoding="utf-8"))
    header = list(pd.read_csv(RESULTS_CSV, nrows=0).columns)
    datasets = [c for c in header if c not in KEY_COLUMNS + NOT_DATASETS]
    if sorted(mapping) != sorted(datasets):
        differ = sorted(set(mapping) ^ set(datasets))
        raise ValueError(f"{COLUMNS_YAML}: columns {differ} are in only one of it and {RESULTS_CSV.name}")
    out = {entry["task"]: PublishedColumn(column, entry["task"], entry["metric"]) for column, entry in mapping.items()}
    if len(out) != len(mapping):
        raise ValueError(f"{COLUMNS_YAML}: a task is named by more than one column")
    return out


@lru_cache(maxsize=1)
def table() -> pd.DataFrame:
    """The published figures (fractions): index (architecture, cleaned tag), one column per task."""
    frame = pd.read_csv(RESULTS_CSV)
    by_column = {c.column: task for task, c in columns().items()}
    frame["pretrained"] = frame["pretrained"].map(clean_tag)
    return frame.set_index(list(KEY_COLUMNS))[list(by_column)].rename(columns=by_column)


def clean_tag(tag: str) -> str:
    """A pretrained tag as open_clip compares it (``pretrained._clean_tag``): lower case, ``-``
    as ``_``. Architecture names stay case sensitive, as in open_clip."""
    return tag.lower().replace("-", "_")


def metric(task: str) -> str | None:
    """The metric of the published figure for ``task`` (evalbench's name: ``acc1``,
    ``mean_per_class_recall``, ``mean_recall@1``...), None if the table has no such task."""
    column = columns().get(task)
    return column.metric if column else None


def lookup(arch: str, tag: str, task: str) -> float | None:
    """The published zero-shot figure of open_clip checkpoint ``arch`` + ``tag`` on the evalbench
    task ``task``, as a fraction (``lookup("ViT-B-32", "openai", "imagenet1k") == 0.6332``);
    None if the checkpoint or the task is not in the table. ``arch`` is case sensitive and
    must name the exact architecture (``ViT-B-32-quickgelu`` and ``ViT-B-32`` are separate rows,
    as they are separate models in open_clip); ``tag`` is compared as open_clip does."""
    frame = table()
    key = (arch, clean_tag(tag))
    if task not in frame.columns or key not in frame.index:
        return None
    value = float(frame.at[key, task])
    return None if math.isnan(value) else value


def openclip_checkpoint(spec: str) -> tuple[str, str] | None:
    """``(arch, tag)`` of a ``--model`` spec ``ARCH@TAG`` naming an open_clip pretrained tag;
    None for every other form: no tag, a family prefix (``hf:``, ``py:``, ``hf-hub:``), a custom
    config JSON or a path to weights. Whether the tag exists is :func:`lookup`'s question."""
    arch, sep, tag = spec.strip().partition("@")
    if not (sep and arch and tag) or arch.endswith(".json"):
        return None
    if any(c in part for part in (arch, tag) for c in ":/\\") or "." in tag:
        return None
    return arch, tag
