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

# 2: matching tasks (per_subset results; per_sample with subset ids instead of pred/label).
# Records of version 1 read unchanged.
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
