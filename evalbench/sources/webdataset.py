"""CLIP_benchmark's webdataset layout, read directly from the tar files.

Layout: ``SPLIT/nshards.txt`` and ``SPLIT/0.tar ...`` whose members are ``KEY.{png,jpg,jpeg,webp}``
plus ``KEY.cls`` (an integer label); ``classnames.txt`` and
``zeroshot_classification_templates.txt`` at the root. Retrieval data (``dataset_type.txt`` at the
root says ``retrieval``) has ``KEY.txt`` members instead, one caption per line. Per-sample
metadata comes from a ``KEY.json`` member (an object) or a ``KEY.npy`` member (a 1-D array, as in
DataComp's WILDS and fairness mirrors, whose entries ``metadata_fields`` names in order).
Matching data
(``type: matching`` tasks) has ``KEY.json`` members holding an item as in the jsonl source
(``captions``, ``label``, optional ``subset``) with the image in ``KEY.jpg``, or the two images
of a Winoground group in ``KEY.0.jpg`` and ``KEY.1.jpg``. ``path`` is a local folder or a hub
dataset (``hf://datasets/ORG/NAME`` or ``https://huggingface.co/datasets/ORG/NAME``), which is
downloaded once into the Hugging Face cache. Members are indexed once so that images are read by
seeking, in any order, from any DataLoader worker.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.sources.base import MatchItem, SourceConfig, SplitData, check_item, data_fingerprint
from evalbench.sources.imagefolder import split_folders

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
HUB_PREFIXES = ("hf://datasets/", "https://huggingface.co/datasets/")


class WebDatasetConfig(SourceConfig):
    path: str
    revision: str | None = None
    # Names of the entries of each sample's .npy metadata array, in order (DataComp's mirrors
    # store WILDS' integer-coded metadata this way, e.g. [region, year, y] for FMoW).
    metadata_fields: list[str] | None = None


class TarImages(Dataset):
    """Images addressed as (tar path, byte offset, size)."""

    def __init__(self, entries: list[tuple[str, int, int]], labels: list[int]):
        self.entries, self.labels = entries, labels
        self._handles: dict[str, object] = {}
        self._pid = None

    def __len__(self) -> int:
        return len(self.entries)

    def _read(self, path: str, offset: int, size: int) -> bytes:
        if self._pid != os.getpid():  # a fresh set of handles in each worker process
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(path) or self._handles.setdefault(path, open(path, "rb"))
        f.seek(offset)
        return f.read(size)

    def __getitem__(self, i: int):
        data = self._read(*self.entries[i])
        return Image.open(io.BytesIO(data)).convert("RGB"), self.labels[i]

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}, "_pid": None}


def _read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _metadata(data: bytes, ext: str, fields: list[str] | None, where: str) -> dict:
    """A sample's .json (an object) or .npy (entries named by ``fields``) member as a dict."""
    if ext == "json":
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EvalbenchError(f"dataset.path: {where}: not valid JSON ({e})") from None
        if not isinstance(value, dict):
            raise EvalbenchError(f"dataset.path: {where}: expected a JSON object, got {type(value).__name__}")
        return value
    array = np.load(io.BytesIO(data), allow_pickle=False).ravel()
    if fields is None:
        raise EvalbenchError(f"dataset.metadata_fields: needed to read {where} (a .npy array of {array.size} values)")
    if len(fields) != array.size:
        raise EvalbenchError(f"dataset.metadata_fields: names {len(fields)} fields but {where} holds {array.size} values")
    return dict(zip(fields, array.tolist()))


def index_tar(
    tar_path: Path, metadata_fields: list[str] | None = None
) -> list[tuple[str, tuple[str, int, int] | None, int | list[str] | None, dict | None]]:
    """(key, image entry, label or captions, metadata or None) per sample of one shard, in
    member order."""
    samples: dict[str, dict] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)
            key_prefix = base[0] + "/" if len(base) == 2 else ""
            stem, _, ext = base[-1].partition(".")
            sample = samples.setdefault(key_prefix + stem, {})
            ext = ext.lower()
            if ext in IMAGE_EXTS:
                sample["image"] = (str(tar_path), member.offset_data, member.size)
            elif ext == "cls":
                sample["target"] = int(tar.extractfile(member).read().decode().strip())
            elif ext == "txt":
                text = tar.extractfile(member).read().decode("utf-8")
                sample["target"] = [line.strip() for line in text.splitlines() if line.strip()]
            elif ext in ("json", "npy"):
                data = tar.extractfile(member).read()
                where = f"{tar_path.name}:{member.name}"
                sample["metadata"] = {**sample.get("metadata", {}), **_metadata(data, ext, metadata_fields, where)}
    return [(k, s.get("image"), s.get("target"), s.get("metadata")) for k, s in samples.items()]


def index_matching_tar(tar_path: Path) -> list[tuple[str, list[tuple[str, int, int]], dict | None]]:
    """(key, image entries in order, parsed ``KEY.json``) per sample of one shard of matching
    data: images are ``KEY.EXT`` or ``KEY.0.EXT``, ``KEY.1.EXT``."""
    samples: dict[str, dict] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, _, name = member.name.rpartition("/")
            parts = name.split(".")
            ext = parts[-1].lower()
            index = int(parts[-2]) if len(parts) > 2 and parts[-2].isdigit() else 0
            stem = ".".join(parts[:-2] if len(parts) > 2 and parts[-2].isdigit() else parts[:-1])
            sample = samples.setdefault(f"{folder}/{stem}" if folder else stem, {"images": {}})
            if ext in IMAGE_EXTS:
                sample["images"][index] = (str(tar_path), member.offset_data, member.size)
            elif ext == "json":
                try:
                    sample["item"] = json.loads(tar.extractfile(member).read().decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise EvalbenchError(f"dataset.path: {tar_path}: {member.name}: not valid JSON ({e})") from None
    return [(k, [s["images"][i] for i in sorted(s["images"])], s.get("item")) for k, s in samples.items()]


class WebDatasetSource:
    Config = WebDatasetConfig

    def __init__(self, config: WebDatasetConfig, task_dir: Path, cache_dir: Path):
        self.config = config
        self.commit: str | None = None
        if config.path.startswith(HUB_PREFIXES):
            self.root = None
            self.repo_id = config.path
            for prefix in HUB_PREFIXES:
                self.repo_id = self.repo_id.removeprefix(prefix)
            self.repo_id = self.repo_id.strip("/")
        else:
            self.root = (task_dir / config.path).resolve()
            if not self.root.is_dir():
                raise EvalbenchError(f"dataset.path: folder not found: {self.root}")

    def _download(self, patterns: list[str]) -> Path:
        from huggingface_hub import snapshot_download

        try:
            path = Path(
                snapshot_download(
                    self.repo_id, repo_type="dataset", revision=self.config.revision, allow_patterns=patterns
                )
            )
            # The hub cache keeps each commit under snapshots/<commit sha>: the data actually read,
            # whatever branch or tag the task names.
            if path.parent.name == "snapshots":
                self.commit = path.name
            return path
        except Exception as e:  # noqa: BLE001
            raise EvalbenchError(
                f"dataset.path: {self.config.path} could not be fetched from the hub ({type(e).__name__}); "
                "if offline, run once with network access or point dataset.path to a local copy"
            ) from None

    def _root_for(self, split: str | None) -> Path:
        if self.root is not None:
            return self.root
        # "*.txt" also matches every SPLIT/nshards.txt, so the snapshot lists every split the
        # repository has, and a missing split can be reported with the ones that exist.
        patterns = ["*.txt"] + ([f"{split}/*"] if split else [])
        return self._download(patterns)

    def load_split(self, split: str) -> SplitData:
        root = self._root_for(split)
        split_dir = root / split
        if not split_dir.is_dir():
            raise MissingSplitError(split, split_folders(root), self.config.path if self.root is None else str(root))
        nshards = _read_lines(split_dir / "nshards.txt")
        tars = [split_dir / f"{i}.tar" for i in range(int(nshards[0]))] if nshards else sorted(split_dir.glob("*.tar"))
        missing = [t for t in tars if not t.is_file()]
        if missing or not tars:
            raise EvalbenchError(f"dataset.path: shard {missing[0] if missing else split_dir / '0.tar'} not found")
        retrieval = (_read_lines(root / "dataset_type.txt") or ["classification"])[0] == "retrieval"
        member = ".txt caption" if retrieval else ".cls label"
        entries, targets, ids, metadata = [], [], [], []
        for tar_path in tars:
            for key, image, target, meta in index_tar(tar_path, self.config.metadata_fields):
                if image is None or target is None or isinstance(target, list) != retrieval:
                    raise EvalbenchError(f"dataset.path: {tar_path}: sample '{key}' lacks an image or a {member}")
                entries.append(image)
                targets.append(target)
                ids.append(f"{split}/{key}")
                metadata.append(meta)
        # Metadata is all or nothing: a split where only some samples carry it has None for the
        # others, and the task's group_by check names the first sample without the field.
        if not any(m is not None for m in metadata):
            metadata = None
        if retrieval:
            labels = [0] * len(entries)
            return SplitData(TarImages(entries, labels), labels, None, ids, targets, metadata)
        return SplitData(TarImages(entries, targets), targets, self.classnames(), ids, metadata=metadata)

    def load_matching(self, split: str) -> SplitData:
        """Matching items, one per ``KEY.json``; EvalbenchError naming the shard and key of the
        first malformed item."""
        root = self._root_for(split)
        split_dir = root / split
        if not split_dir.is_dir():
            raise EvalbenchError(f"splits: no split folder '{split}' in {root}")
        nshards = _read_lines(split_dir / "nshards.txt")
        tars = [split_dir / f"{i}.tar" for i in range(int(nshards[0]))] if nshards else sorted(split_dir.glob("*.tar"))
        missing = [t for t in tars if not t.is_file()]
        if missing or not tars:
            raise EvalbenchError(f"dataset.path: shard {missing[0] if missing else split_dir / '0.tar'} not found")
        entries, ids, items = [], [], []
        for tar_path in tars:
            for key, images, item in index_matching_tar(tar_path):
                where = f"{tar_path}: sample '{key}'"
                if not isinstance(item, dict):
                    raise EvalbenchError(f"{where}: no {key}.json member holding the item")
                check_item(images, item.get("captions"), item.get("label"), where)
                subset = item.get("subset")
                rows = tuple(range(len(entries), len(entries) + len(images)))
                entries += images
                ids += [f"{split}/{key}/{j}" for j in range(len(images))]
                label = item.get("label") if len(images) == 1 else None
                items.append(MatchItem(rows, tuple(item["captions"]), label, None if subset is None else str(subset)))
        if not items:
            raise EvalbenchError(f"dataset.path: no matching items in {split_dir}")
        labels = [0] * len(entries)
        return SplitData(TarImages(entries, labels), labels, None, ids, items=items)

    def fingerprint(self) -> str:
        """For hub data, the commit that was downloaded stands in for a branch name such as
        ``main``, so new data pushed to the branch never meets features cached from the old."""
        return data_fingerprint(f"{self.config.path}@{self.commit or self.config.revision}", self.root)

    def classnames(self) -> list[str] | None:
        return _read_lines(self._root_for(None) / "classnames.txt")

    def templates(self) -> list[str] | None:
        return _read_lines(self._root_for(None) / "zeroshot_classification_templates.txt")
