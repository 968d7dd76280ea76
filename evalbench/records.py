"""Result records: one JSON file per (model, task), written atomically."""

from __future__ import annotations

import base64
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalbench.config import MODES  # noqa: F401 - re-exported
from evalbench.errors import EvalbenchError
from evalbench.fileio import atomic_write_json

log = logging.getLogger(__name__)

# Readers accept every version up to this one.
# 1: the first format.
# 2: model.adapter (how the adapter ran the model); matching tasks' per_subset and per-item
#    correctness; group tasks' per_group and per-image groups. All additions: version 1 records
#    read unchanged.
# 3: model.step and model.run (a checkpoint of a sweep: its training step and run; null for other
#    models). Additions again: version 1 and 2 records read with both null.
SCHEMA_VERSION = 3


class _Open(BaseModel):
    # Sections may carry more keys than the ones typed here (adapter metadata, a task's config):
    # they are kept as they are, so an older reader does not drop what a newer writer added.
    model_config = ConfigDict(extra="allow")


class RecordModel(_Open):
    """Which model produced the results: display name, the ``--model`` spec, weights fingerprint;
    for a checkpoint of a sweep, its training ``step`` and the ``run`` it belongs to."""

    name: str
    spec: str
    fingerprint: str | None = None
    step: int | None = None
    run: str | None = None


class RecordTask(_Open):
    """Which task: name, version, hash of its resolved YAML, main metric, ``--limit`` and the
    resolved task config."""

    name: str
    version: str | None = None
    hash: str
    main_metric: str = "acc1"
    limit: int | None = None
    config: dict[str, Any] | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_str(cls, v):
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


class Record(BaseModel):
    """One result record: one JSON file per (model, task), ``results`` keyed by mode
    (``zeroshot``, ``linear_probe``, ``linear_probe@K``, ``retrieval``), each a mapping of
    metric names to values plus ``main_score``. The one definition that the writer (api) and
    every reader (report, resume, ``load_records``) use."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    model: RecordModel
    task: RecordTask
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)

    def to_dict(self) -> dict:
        """The record as plain JSON-able data, exactly as written to disk."""
        return self.model_dump(mode="json")

    @classmethod
    def from_data(cls, data: Any, path: Path | str = "record") -> "Record":
        """Validate parsed JSON (migrating older schema versions); EvalbenchError naming ``path``
        and the first field at fault."""
        if not isinstance(data, dict) or "schema_version" not in data:
            raise EvalbenchError(f"{path}: schema_version: missing; not an evalbench record")
        version = data["schema_version"]
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise EvalbenchError(f"{path}: schema_version: {version} is newer than this evalbench reads ({SCHEMA_VERSION})")
        try:
            return cls.model_validate(migrate(data))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(top)"
            raise EvalbenchError(f"{path}: {field}: {err['msg']}") from None


def migrate(data: dict) -> dict:
    """Older records in the current layout; each version adds one step here. 1 -> 2 and 2 -> 3
    only added keys (3: ``model.step`` and ``model.run``, null when absent), so older records are
    already valid as they are."""
    return data


def record_path(results_dir: Path, model_slug: str, task_name: str) -> Path:
    return Path(results_dir) / model_slug / f"{task_name}.json"


def load_record(path: Path) -> Record | None:
    """The record at ``path`` as a :class:`Record`, None if there is none; EvalbenchError if the
    file is not a valid record."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalbenchError(f"{path}: not a valid result record ({e}); move it away or pass --overwrite") from None
    return Record.from_data(data, path)


def read_record(path: Path) -> dict | None:
    """:func:`load_record` as plain data (``record["results"]["zeroshot"]["acc1"]``)."""
    record = load_record(path)
    return None if record is None else record.to_dict()


def write_record(path: Path, record: Record | dict) -> None:
    """Validate ``record`` and write it as JSON atomically: readers never see half a file, and
    an invalid record is never written."""
    if not isinstance(record, Record):
        record = Record.from_data(record, path)
    atomic_write_json(path, record.to_dict())


def iter_records(results_dir: Path, strict: bool = False):
    """``(path, Record)`` for every record under ``results_dir`` (``*/*.json``), in a stable order.
    A file that is not a valid record is logged as one warning line naming it and skipped
    (raised as EvalbenchError when ``strict``)."""
    for path in sorted(Path(results_dir).glob("*/*.json")):
        try:
            record = load_record(path)
        except EvalbenchError as e:
            if strict:
                raise
            log.warning("skipped %s", e)
            continue
        if record is not None:
            yield path, record


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(array.tobytes(), 9)).decode("ascii")


def _unpack(text: str, dtype) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype)


def pack_predictions(scores: np.ndarray, y_true: np.ndarray) -> dict:
    """Per-test-image predictions, compactly: the predicted class (int32), correctness (bits) and
    the true class (int32), each zlib-compressed and base64-encoded, in the order of the task's
    test rows."""
    pred = np.asarray(scores).argmax(axis=1).astype(np.int32)
    correct = pred == np.asarray(y_true)
    return {"n": len(pred), "pred": _pack(pred), "correct": _pack(np.packbits(correct)),
            "label": _pack(np.asarray(y_true).astype(np.int32))}


def unpack_predictions(per_sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, correct as bool) arrays from :func:`pack_predictions`."""
    n = per_sample["n"]
    pred = _unpack(per_sample["pred"], np.int32)
    correct = np.unpackbits(_unpack(per_sample["correct"], np.uint8))[:n].astype(bool)
    return pred, correct


def unpack_labels(per_sample: dict) -> np.ndarray | None:
    """The true classes stored by :func:`pack_predictions` (None in records that predate them)."""
    return _unpack(per_sample["label"], np.int32).astype(np.int64) if "label" in per_sample else None


def pack_matching(correct: np.ndarray, subset_ids: np.ndarray, subsets: list[str]) -> dict:
    """Per-item outcomes of a matching task, compactly: ``correct`` (bits) for the task's main
    metric, and each item's subset as an index into ``subsets`` (int32), in item order."""
    correct = np.asarray(correct, dtype=bool)
    return {"n": len(correct), "correct": _pack(np.packbits(correct)),
            "subset": _pack(np.asarray(subset_ids).astype(np.int32)), "subsets": list(subsets)}


def unpack_correct(per_sample: dict) -> np.ndarray:
    """Correct per test image or item, as bool, from either :func:`pack_predictions` or
    :func:`pack_matching`."""
    return np.unpackbits(_unpack(per_sample["correct"], np.uint8))[: per_sample["n"]].astype(bool)


def unpack_subsets(per_sample: dict) -> np.ndarray | None:
    """Each item's subset index from :func:`pack_matching` (None for classification samples)."""
    return _unpack(per_sample["subset"], np.int32).astype(np.int64) if "subset" in per_sample else None


def pack_groups(scores: np.ndarray, y_true: np.ndarray, groups: np.ndarray) -> dict:
    """Per-test-image groups beside :func:`pack_predictions`: ``group_names`` (sorted) and each
    image's index into them (int32, packed), plus top-5 correctness (bits, with at least 5
    classes; top 5 as scikit-learn's ``top_k_accuracy_score`` ranks), so the report can
    resample worst-group metrics within groups."""
    names, index = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    out = {"group_names": names.tolist(), "group": _pack(index.astype(np.int32))}
    scores = np.asarray(scores)
    if scores.shape[1] >= 5:
        top5 = np.argsort(scores, axis=1, kind="mergesort")[:, ::-1][:, :5]
        out["correct5"] = _pack(np.packbits((top5 == np.asarray(y_true)[:, None]).any(axis=1)))
    return out


def unpack_groups(per_sample: dict) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(group name per image, top-5 correct per image or None) from :func:`pack_groups`; None
    for records without groups."""
    if "group" not in per_sample:
        return None
    n = per_sample["n"]
    names = np.asarray(per_sample["group_names"])
    groups = names[_unpack(per_sample["group"], np.int32)]
    correct5 = None
    if "correct5" in per_sample:
        correct5 = np.unpackbits(_unpack(per_sample["correct5"], np.uint8))[:n].astype(bool)
    return groups, correct5
