"""A local folder of images with captions in JSON lines, for retrieval tasks.

Each line of the captions file is ``{"image": "rel/path.jpg", "captions": ["...", ...]}``, the
path relative to the folder. ``file`` may contain ``{split}`` to hold one file per split;
without it, the one file is every split's.
"""

from __future__ import annotations

import json
from pathlib import Path

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.sources.base import SourceConfig, SplitData, data_fingerprint
from evalbench.sources.imagefolder import ImageFiles


class CaptionFolderConfig(SourceConfig):
    path: str
    file: str = "captions.jsonl"


class CaptionFolderSource:
    Config = CaptionFolderConfig

    def __init__(self, config: CaptionFolderConfig, task_dir: Path, cache_dir: Path):
        self.config = config
        self.root = (task_dir / config.path).resolve()
        if not self.root.is_dir():
            raise EvalbenchError(f"dataset.path: folder not found: {self.root}")

    def load_split(self, split: str) -> SplitData:
        path = self.root / self.config.file.replace("{split}", split)
        if not path.is_file():
            if "{split}" in self.config.file:
                raise MissingSplitError(split, self._splits(), str(self.root / self.config.file))
            raise EvalbenchError(f"dataset.file: captions file not found: {path}")
        files, captions = [], []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image, caps = row["image"], row["captions"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise EvalbenchError(f"{path}: line {n}: expected {{\"image\": ..., \"captions\": [...]}} ({e})") from None
            if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
                raise EvalbenchError(f"{path}: line {n}: captions: expected a non-empty list of strings")
            target = (self.root / image).resolve()
            if not target.is_relative_to(self.root):
                raise EvalbenchError(f"{path}: line {n}: image: path leaves the dataset folder: {image}")
            files.append(target)
            captions.append(caps)
        if not files:
            raise EvalbenchError(f"{path}: no images listed")
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise EvalbenchError(f"{path}: image not found: {missing[0]}")
        labels = [0] * len(files)
        ids = [str(f.relative_to(self.root)) for f in files]
        return SplitData(ImageFiles(files, labels), labels, None, ids, captions)

    def _splits(self) -> list[str]:
        """The splits whose captions file exists: what ``{split}`` stands for in those names."""
        head, _, tail = self.config.file.partition("{split}")
        names = []
        for f in self.root.glob(self.config.file.replace("{split}", "*")):
            rel = f.relative_to(self.root).as_posix()
            names.append(rel[len(head) : len(rel) - len(tail)])
        return names

    def fingerprint(self) -> str:
        return data_fingerprint(f"{self.root}:{self.config.file}", self.root)

    def classnames(self) -> list[str] | None:
        return None

    def templates(self) -> list[str] | None:
        return None
