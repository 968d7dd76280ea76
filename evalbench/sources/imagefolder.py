"""Local folders: ``PATH/SPLIT/CLASS/*.{jpg,png,...}``. Label names are the class folder names.

Per-sample metadata: an optional ``PATH/metadata.csv`` with a ``file_name`` column holding each
image's path relative to ``PATH`` (``test/red/0001.png``) and one column per field. Images
without a row have no metadata; a row naming an image that is not there is an error.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.sources.base import SourceConfig, SplitData, data_fingerprint

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
METADATA_FILE = "metadata.csv"
KEY_COLUMN = "file_name"


class ImageFolderConfig(SourceConfig):
    path: str


class ImageFiles(Dataset):
    """A list of (image path, label) pairs, decoded to RGB on access."""

    def __init__(self, files: list[Path], labels: list[int]):
        self.files = files
        self.labels = labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as img:
            return img.convert("RGB"), self.labels[i]


def split_folders(root: Path) -> list[str]:
    """The sub-folders of ``root`` (its splits, in the layouts that keep one folder per split)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderSource:
    Config = ImageFolderConfig

    def __init__(self, config: ImageFolderConfig, task_dir: Path, cache_dir: Path):
        self.root = (task_dir / config.path).resolve()
        if not self.root.is_dir():
            raise EvalbenchError(f"dataset.path: folder not found: {self.root}")

    def _split_dir(self, split: str) -> Path:
        path = self.root / split
        if not path.is_dir():
            raise MissingSplitError(split, split_folders(self.root), str(self.root))
        return path

    def load_split(self, split: str) -> SplitData:
        split_dir = self._split_dir(split)
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir())
        files, labels = [], []
        for label, class_dir in enumerate(class_dirs):
            for f in sorted(class_dir.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(f)
                    labels.append(label)
        if not files:
            raise EvalbenchError(f"splits: split folder {split_dir} holds no images in class subfolders")
        ids = [f.relative_to(self.root).as_posix() for f in files]
        metadata = self._metadata(split, ids)
        return SplitData(ImageFiles(files, labels), labels, [d.name for d in class_dirs], ids, metadata=metadata)

    def _metadata(self, split: str, ids: list[str]) -> list[dict | None] | None:
        """Rows of metadata.csv for the images ``ids`` of ``split`` (None for an image without a
        row), or None without the file."""
        path = self.root / METADATA_FILE
        if not path.is_file():
            return None
        import pandas as pd

        try:
            table = pd.read_csv(path, dtype={KEY_COLUMN: str}, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise EvalbenchError(f"dataset.path: {path}: not a readable CSV ({e})") from None
        if KEY_COLUMN not in table.columns:
            raise EvalbenchError(f"dataset.path: {path}: no '{KEY_COLUMN}' column (the image path relative to {self.root})")
        keys = table[KEY_COLUMN].map(lambda k: Path(k).as_posix())
        repeated = keys[keys.duplicated()]
        if len(repeated):
            raise EvalbenchError(f"dataset.path: {path}: file '{repeated.iloc[0]}' has more than one row")
        known = set(ids)
        splits = {p.name for p in self.root.iterdir() if p.is_dir()}
        for row, key in enumerate(keys, start=2):  # line 1 is the header
            top = key.split("/", 1)[0]
            if (top == split and key not in known) or top not in splits:
                raise EvalbenchError(f"dataset.path: {path}: line {row}: no image '{key}' under {self.root}")
        fields = table.drop(columns=KEY_COLUMN)
        by_key = dict(zip(keys, fields.to_dict("records")))
        return [by_key.get(i) for i in ids]

    def fingerprint(self) -> str:
        return data_fingerprint(str(self.root), self.root)

    def classnames(self) -> list[str] | None:
        return None

    def templates(self) -> list[str] | None:
        return None
