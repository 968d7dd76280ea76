"""Local folders: ``PATH/SPLIT/CLASS/*.{jpg,png,...}``. Label names are the class folder names."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.sources.base import SourceConfig, SplitData, data_fingerprint

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


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
        ids = [str(f.relative_to(self.root)) for f in files]
        return SplitData(ImageFiles(files, labels), labels, [d.name for d in class_dirs], ids)

    def fingerprint(self) -> str:
        return data_fingerprint(str(self.root), self.root)

    def classnames(self) -> list[str] | None:
        return None

    def templates(self) -> list[str] | None:
        return None
