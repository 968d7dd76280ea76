"""Result records: one JSON file per (model, task), written atomically."""

from __future__ import annotations

import base64
import json
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from evalbench.errors import EvalbenchError

# 2: a group task's zero-shot result adds per_group, worst_group_* and f1_macro, and its
# per_sample adds group / group_names / correct5 (records of version 1 read unchanged).
SCHEMA_VERSION = 2
from evalbench.config import MODES  # noqa: F401 - re-exported


def record_path(results_dir: Path, model_slug: str, task_name: str) -> Path:
    return Path(results_dir) / model_slug / f"{task_name}.json"


def read_record(path: Path) -> dict | None:
    """The record at ``path``, None if there is none; EvalbenchError if it is not a record."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalbenchError(f"{path}: not a valid result record ({e}); move it away or pass --overwrite") from None
    if not isinstance(record, dict) or "schema_version" not in record:
        raise EvalbenchError(f"{path}: schema_version: missing; not an evalbench record")
    if record["schema_version"] > SCHEMA_VERSION:
        raise EvalbenchError(
            f"{path}: schema_version: {record['schema_version']} is newer than this evalbench reads ({SCHEMA_VERSION})"
        )
    return record


def write_record(path: Path, record: dict) -> None:
    """Write JSON to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def iter_records(results_dir: Path):
    """Every record under ``results_dir`` (``*/*.json``), in a stable order."""
    for path in sorted(Path(results_dir).glob("*/*.json")):
        record = read_record(path)
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
