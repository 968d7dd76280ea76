"""Reading the npz files of ``evalbench probe --features``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from evalbench.errors import EvalbenchError

VAL_FRACTION = 0.2


def read_features_npz(path: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "val", "test"}: (x, y)`` from an npz with x_train, y_train, x_test, y_test and
    optionally x_val, y_val. Without them, val is a seeded, stratified 20% of train."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EvalbenchError(f"--features: file not found: {path}") from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise EvalbenchError(f"--features: {path}: not a readable npz file ({e})") from None
    required = ["x_train", "y_train", "x_test", "y_test"]
    missing = [k for k in required if k not in data.files]
    if missing:
        raise EvalbenchError(f"{path}: {missing[0]}: missing array (has: {', '.join(data.files)})")
    if ("x_val" in data.files) != ("y_val" in data.files):
        raise EvalbenchError(f"{path}: x_val: x_val and y_val come together")
    splits = {}
    for name in ("train", "val", "test"):
        if f"x_{name}" not in data.files:
            continue
        x, y = np.asarray(data[f"x_{name}"], dtype=np.float32), np.asarray(data[f"y_{name}"])
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise EvalbenchError(f"{path}: x_{name}: expected x (n, d) and y (n,), got {x.shape} and {y.shape}")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise EvalbenchError(f"{path}: y_{name}: expected non-negative integer class labels")
        splits[name] = (x, y.astype(np.int64))
    if "val" not in splits:
        x, y = splits["train"]
        counts = np.bincount(y)
        stratify = y if counts[counts > 0].min() >= 2 else None
        tr, va = train_test_split(np.arange(len(y)), test_size=VAL_FRACTION, random_state=seed, stratify=stratify)
        splits["train"], splits["val"] = (x[tr], y[tr]), (x[va], y[va])
    return {name: splits[name] for name in ("train", "val", "test")}
