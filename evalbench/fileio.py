"""Writing files so that readers never see half of one, and a crash loses at most the new one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: Path, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``. The parent folder is created. On any failure the temporary file is removed and
    ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    """``data`` as JSON (with a final newline), written atomically."""

    def write(f: IO) -> None:
        json.dump(data, f, indent=indent)
        f.write("\n")

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text))


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` of ``array``, written atomically."""
    atomic_write(path, lambda f: np.save(f, array), binary=True)
