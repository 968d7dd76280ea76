"""A local folder of matching items in JSON lines, for ``type: matching`` tasks.

``FOLDER/SPLIT.jsonl`` holds one item per line, image paths relative to ``FOLDER``:

    {"image": "val2017/000000397133.jpg", "captions": ["a man on a horse", "a horse on a man"],
     "label": 0, "subset": "swap-obj"}

``label`` is the index of the correct caption and ``subset`` is optional. A Winoground-style
group has two images and two captions, image j matching caption j, and no label:

    {"images": ["ex0_img0.png", "ex0_img1.png"], "captions": ["...", "..."]}

An image used by several items (SugarCrepe's subsets share COCO images) is read and encoded once.
"""

from __future__ import annotations

import json
from pathlib import Path

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.sources.base import MatchItem, SourceConfig, SplitData, check_item, data_fingerprint
from evalbench.sources.imagefolder import ImageFiles


class JsonlConfig(SourceConfig):
    path: str


class JsonlSource:
    Config = JsonlConfig

    def __init__(self, config: JsonlConfig, task_dir: Path, cache_dir: Path):
        self.config = config
        self.root = (task_dir / config.path).resolve()
        if not self.root.is_dir():
            raise EvalbenchError(f"dataset.path: folder not found: {self.root}")

    def load_matching(self, split: str) -> SplitData:
        """The items of ``SPLIT.jsonl``; EvalbenchError naming the file, line and field of the
        first malformed item or missing image."""
        path = self.root / f"{split}.jsonl"
        if not path.is_file():
            have = [p.stem for p in self.root.glob("*.jsonl")]
            raise MissingSplitError(split, have, str(self.root))
        rows: dict[Path, int] = {}  # image file -> row of the split's dataset
        items = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}: line {n}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalbenchError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(item, dict):
                raise EvalbenchError(f"{where}: expected an object with image and captions")
            field = "images" if "images" in item else "image"
            images = item.get(field)
            images = images if isinstance(images, list) else [images] if images is not None else []
            check_item(images, item.get("captions"), item.get("label"), where)
            subset = item.get("subset")
            if subset is not None and not isinstance(subset, str):
                raise EvalbenchError(f"{where}: subset: expected a string, got {subset!r}")
            image_rows = []
            for image in images:
                if not isinstance(image, str):
                    raise EvalbenchError(f"{where}: {field}: expected a path, got {image!r}")
                target = (self.root / image).resolve()
                if not target.is_relative_to(self.root):
                    raise EvalbenchError(f"{where}: {field}: path leaves the dataset folder: {image}")
                if target not in rows:
                    if not target.is_file():
                        raise EvalbenchError(f"{where}: {field}: image not found: {target}")
                    rows[target] = len(rows)
                image_rows.append(rows[target])
            label = item.get("label") if len(images) == 1 else None
            items.append(MatchItem(tuple(image_rows), tuple(item["captions"]), label, subset))
        if not items:
            raise EvalbenchError(f"{path}: no items")
        files = list(rows)
        labels = [0] * len(files)
        ids = [str(f.relative_to(self.root)) for f in files]
        return SplitData(ImageFiles(files, labels), labels, None, ids, items=items)

    def load_split(self, split: str) -> SplitData:
        """Matching items only: the same as :meth:`load_matching`."""
        return self.load_matching(split)

    def fingerprint(self) -> str:
        return data_fingerprint(str(self.root), self.root)

    def classnames(self) -> list[str] | None:
        return None

    def templates(self) -> list[str] | None:
        return None
