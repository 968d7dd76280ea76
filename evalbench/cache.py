"""On-disk cache of image features and zero-shot text classifiers.

Image features live in ``<cache>/features/<key>/``: ``shard-NNNNN.npy`` files written as they
complete (each by temp file + rename), and ``manifest.json``. An entry counts as whole only when
its manifest says ``complete: true``; an interrupted extraction leaves finished shards behind and
the next run encodes only the missing ones. Text classifiers live in ``<cache>/text/<key>.npy``.
Probe results live in ``<cache>/probes/<key>.json``, keyed by a digest of the exact feature and
label arrays plus every probe setting, so a rerun on unchanged features skips the C sweep.

Keys hash everything the numbers depend on: the model fingerprint (weights as resolved, hub
commit or file content; architecture; preprocessing config), the version of the code that
computes the embeddings (open_clip's, transformers'), the data fingerprint (source, revision,
files), the split and rows, the precision and the stored dtype (see ``runners.feature_key``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evalbench.fileio import atomic_save_npy, atomic_write_json

CACHE_DTYPES = ("float32", "float16")

log = logging.getLogger(__name__)


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def array_digest(*arrays: np.ndarray) -> str:
    """A digest of the arrays' shapes, dtypes and bytes (blake2b, about 1 GB/s)."""
    h = hashlib.blake2b(digest_size=20)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@dataclass
class FeatureEntry:
    """One cached feature matrix, stored as fixed-size row shards."""

    directory: Path
    meta: dict
    shard_size: int = 4096
    dtype: str = "float32"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def shard_path(self, i: int) -> Path:
        return self.directory / f"shard-{i:05d}.npy"

    def n_shards(self, n_rows: int) -> int:
        return (n_rows + self.shard_size - 1) // self.shard_size

    def manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def complete(self) -> bool:
        m = self.manifest()
        return bool(m and m.get("complete"))

    def has_shard(self, i: int) -> bool:
        return self.shard_path(i).is_file()

    def begin(self, n_rows: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.manifest() is None:
            atomic_write_json(self.manifest_path, {**self.meta, "n": n_rows, "shard_size": self.shard_size,
                                              "dtype": self.dtype, "complete": False})

    def write_shard(self, i: int, features: np.ndarray) -> None:
        atomic_save_npy(self.shard_path(i), features.astype(self.dtype))

    def finish(self, n_rows: int, dim: int) -> None:
        atomic_write_json(self.manifest_path, {**self.meta, "n": n_rows, "dim": dim, "shard_size": self.shard_size,
                                          "dtype": self.dtype, "complete": True})

    def load(self, n_rows: int) -> np.ndarray:
        """The whole matrix as float32, shard by shard into one preallocated array."""
        out = None
        for i in range(self.n_shards(n_rows)):
            shard = np.load(self.shard_path(i))
            if out is None:
                out = np.empty((n_rows, shard.shape[1]), dtype=np.float32)
            out[i * self.shard_size : i * self.shard_size + len(shard)] = shard
        return out


class FeatureCache:
    """The cache folder; ``None`` root means caching is off."""

    def __init__(self, root: Path | None, dtype: str = "float32", shard_size: int = 4096):
        self.root = Path(root) if root is not None else None
        self.dtype = dtype
        self.shard_size = shard_size

    def features(self, key_parts: dict, meta: dict) -> FeatureEntry | None:
        if self.root is None:
            return None
        key = digest({**key_parts, "dtype": self.dtype, "shard_size": self.shard_size})
        return FeatureEntry(self.root / "features" / key, {**meta, "key": key}, self.shard_size, self.dtype)

    def text_path(self, key_parts: dict) -> Path | None:
        if self.root is None:
            return None
        return self.root / "text" / f"{digest(key_parts)}.npy"

    def load_text(self, key_parts: dict) -> np.ndarray | None:
        path = self.text_path(key_parts)
        return np.load(path) if path is not None and path.is_file() else None

    def save_text(self, key_parts: dict, classifier: np.ndarray, meta: dict) -> None:
        path = self.text_path(key_parts)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(path, classifier)
        atomic_write_json(path.with_suffix(".json"), meta)

    def result_path(self, key_parts: dict) -> Path | None:
        if self.root is None:
            return None
        return self.root / "probes" / f"{digest(key_parts)}.json"

    def load_result(self, key_parts: dict) -> dict | None:
        """A probe result saved under the same key, or None (also for an unreadable file)."""
        path = self.result_path(key_parts)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["result"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            return None

    def save_result(self, key_parts: dict, result: dict, meta: dict) -> None:
        path = self.result_path(key_parts)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**meta, "result": result})


def _read_meta(path: Path) -> dict:
    """A cache entry's JSON metadata; an unreadable or non-object file is warned about in one
    line naming it and read as ``{}``, so one damaged entry does not hide the others."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = str(e) if isinstance(e, json.JSONDecodeError) else type(e).__name__
        log.warning("%s: unreadable cache metadata (%s); listed as incomplete (delete it to drop the entry)", path, reason)
        return {}
    if not isinstance(meta, dict):
        log.warning("%s: cache metadata is not a JSON object; listed as incomplete (delete it to drop the entry)", path)
        return {}
    return meta


def list_entries(root: Path) -> list[dict]:
    """A row per cache entry: kind, model, task, split, rows, size, complete, path; by model, task.
    An entry whose metadata cannot be read is listed with what is known (kind, size, path;
    ``complete`` false) after a one-line warning naming the file."""
    rows = []
    for manifest in sorted((root / "features").glob("*/manifest.json")):
        meta = _read_meta(manifest)
        size = sum(f.stat().st_size for f in manifest.parent.iterdir())
        rows.append({"kind": "features", "model": meta.get("model"), "task": meta.get("task"),
                     "split": meta.get("split"), "rows": meta.get("n"), "dtype": meta.get("dtype"),
                     "size_mb": round(size / 2**20, 2), "complete": bool(meta.get("complete")),
                     "path": str(manifest.parent)})
    for meta_path in sorted((root / "text").glob("*.json")):
        meta = _read_meta(meta_path)
        npy = meta_path.with_suffix(".npy")
        rows.append({"kind": "text", "model": meta.get("model"), "task": meta.get("task"), "split": "-",
                     "rows": meta.get("classes"), "dtype": "float32",
                     "size_mb": round(npy.stat().st_size / 2**20, 2) if npy.is_file() else 0.0,
                     "complete": bool(meta) and npy.is_file(), "path": str(npy)})
    for path in sorted((root / "probes").glob("*.json")):
        meta = _read_meta(path)
        rows.append({"kind": "probe", "model": meta.get("model"), "task": meta.get("task"),
                     "split": meta.get("mode", "-"), "rows": meta.get("n_train"), "dtype": "-",
                     "size_mb": round(path.stat().st_size / 2**20, 2), "complete": "result" in meta,
                     "path": str(path)})
    return sorted(rows, key=lambda r: (r["model"] or "", r["task"] or "", r["kind"], str(r["split"])))


def clear_entries(root: Path, pattern: str | None = None) -> list[dict]:
    """Remove entries whose ``model/task/split`` matches ``pattern`` (all when None)."""
    removed = []
    for row in list_entries(root):
        label = f"{row['model']}/{row['task']}/{row['split']}"
        if pattern is None or fnmatch.fnmatch(label, pattern):
            path = Path(row["path"])
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
            removed.append(row)
    return removed
