"""What every dataset source returns, and the registry of source kinds.

A source turns the ``dataset:`` mapping of a task into one :class:`SplitData` per split. Each
source kind is one small module with a pydantic ``Config`` (its YAML keys, strict) and a class
implementing :class:`Source`. Runners never look at which kind they got.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict
from torch.utils.data import Dataset


class SourceConfig(BaseModel):
    """Base of each source's YAML keys: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str


@dataclass
class SplitData:
    """One split of a dataset.

    ``dataset[i]`` returns ``(PIL.Image, int)`` where the int indexes ``label_names`` (the source's
    own label order); ``labels[i]`` is that same int, known without decoding the image.
    ``label_names`` is None when the data carries only integer labels. ``ids`` are stable
    per-sample identifiers (file paths, hub row keys) used for leak checks, or None.
    For retrieval data, ``captions[i]`` lists the captions of image i (labels are then unused).
    ``metadata[i]`` is image i's per-sample metadata (field -> value: a webdataset sample's
    ``.json``/``.npy`` member, a Hugging Face row's other columns, a row of an image folder's
    ``metadata.csv``), or None when the source carries none. For image-association data,
    ``associations`` lists the cues, each over several images of ``dataset``.
    """

    dataset: Dataset
    labels: list[int]
    label_names: list[str] | None
    ids: list[str] | None = None
    captions: list[list[str]] | None = None
    metadata: list[dict] | None = None
    associations: list["Association"] | None = None


@dataclass(frozen=True)
class Association:
    """One image-association question (WinoGAViL): a text ``cue``, its candidate ``images`` (rows
    of the split's dataset) and ``answers``, the positions within ``images`` of the candidates
    that go with the cue."""

    cue: str
    images: tuple[int, ...]
    answers: tuple[int, ...]


class Source(Protocol):
    Config: ClassVar[type[SourceConfig]]

    def __init__(self, config: Any, task_dir: Path, cache_dir: Path) -> None: ...

    def load_split(self, split: str) -> SplitData:
        """Return the named split; raise EvalbenchError naming the split if it does not exist."""

    def fingerprint(self) -> str:
        """A string that changes whenever the data may change (path, revision, file sizes)."""

    def classnames(self) -> list[str] | None:
        """Class names shipped with the data (webdataset's classnames.txt), else None."""

    def templates(self) -> list[str] | None:
        """Prompt templates shipped with the data, else None."""


def data_fingerprint(identity: str, folder: Path | None = None) -> str:
    """A digest of ``identity`` (path, revision, config) and, for local data, the name and size of
    every file under ``folder``: cheap, and it changes when the data does."""
    h = hashlib.sha256(identity.encode())
    if folder is not None:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                h.update(f"{f.relative_to(folder)}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


# name -> "module:Class"; imported only when a task uses it.
SOURCES: dict[str, str] = {
    "hf": "evalbench.sources.hf:HFSource",
    "imagefolder": "evalbench.sources.imagefolder:ImageFolderSource",
    "webdataset": "evalbench.sources.webdataset:WebDatasetSource",
    "generated": "evalbench.sources.generated:GeneratedSource",
    "captionfolder": "evalbench.sources.captionfolder:CaptionFolderSource",
}


def source_class(kind: str) -> type[Source]:
    """The class registered for ``kind``; KeyError if none is."""
    module_name, _, attr = SOURCES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)
