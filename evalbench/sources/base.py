"""What every dataset source returns, and the registry of source kinds.

A source turns the ``dataset:`` mapping of a task into one :class:`SplitData` per split. Each
source kind is one small module with a pydantic ``Config`` (its YAML keys, strict) and a class
implementing :class:`Source`. Runners never look at which kind they got.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict
from torch.utils.data import Dataset

from evalbench.errors import EvalbenchError


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
    For matching data (:meth:`Source.load_matching`), ``items`` are the test items and
    ``dataset`` holds their images, each once.
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
    items: list["MatchItem"] | None = None
    metadata: list[dict] | None = None
    associations: list["Association"] | None = None


@dataclass(frozen=True)
class MatchItem:
    """One item of a matching task (compositionality benchmarks).

    ``images`` are rows of the split's ``dataset``. With one image, ``captions`` are its
    candidates and ``label`` indexes the correct one (SugarCrepe, ARO). With two images, it is a
    Winoground group: two captions, image j matching caption j, and no ``label``. ``subset``
    names the part of the benchmark the item belongs to (None: the task has no parts).
    """

    images: tuple[int, ...]
    captions: tuple[str, ...]
    label: int | None
    subset: str | None = None


def check_item(images: list, captions, label, where: str) -> None:
    """EvalbenchError naming ``where`` (file and line, or dataset and row) and the field at
    fault if an item is malformed: no candidate captions, a correct index out of range, a group
    that is not two images with two captions."""
    if not isinstance(captions, (list, tuple)) or not captions:
        raise EvalbenchError(f"{where}: captions: the item has no candidate captions")
    if not all(isinstance(c, str) and c for c in captions):
        raise EvalbenchError(f"{where}: captions: expected a list of non-empty strings")
    if len(images) >= 2:
        if len(images) != 2 or len(captions) != 2:
            raise EvalbenchError(
                f"{where}: images: a Winoground group is 2 images and 2 captions, "
                f"got {len(images)} images and {len(captions)} captions"
            )
        return
    if not images:
        raise EvalbenchError(f"{where}: image: the item has no image")
    if isinstance(label, bool) or not isinstance(label, int):
        raise EvalbenchError(f"{where}: label: expected the index of the correct caption, got {label!r}")
    if not 0 <= label < len(captions):
        raise EvalbenchError(f"{where}: label: index {label} outside the {len(captions)} candidate captions")
    if len(captions) < 2:
        raise EvalbenchError(f"{where}: captions: one caption is no choice; an item needs at least 2 candidates")


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

    # Optional: sources that can hold matching items (``type: matching``) also implement
    # ``load_matching(split) -> SplitData`` returning ``items``; see :class:`MatchItem`.


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
    "jsonl": "evalbench.sources.jsonl:JsonlSource",
}
# Installed packages add source kinds under this entry-point group: ``KIND = pkg.module:Class``,
# a class like the built-in ones (a pydantic ``Config`` deriving from SourceConfig, ``load_split``,
# ``fingerprint``, ``classnames``, ``templates``). A task then says ``dataset: {source: KIND}``.
# Built-in kinds win over plugins of the same name.
ENTRY_POINT_GROUP = "evalbench.sources"


def _plugins() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in SOURCES}


def source_kinds() -> list[str]:
    """Every source kind a task may name: the built-in ones and those of installed plugins."""
    return sorted({*SOURCES, *_plugins()})


def source_class(kind: str) -> type[Source]:
    """The class registered for ``kind``; KeyError if none is, EvalbenchError for a plugin that
    fails to load or lacks a Config."""
    if kind in SOURCES:
        module_name, _, attr = SOURCES[kind].partition(":")
        return getattr(importlib.import_module(module_name), attr)
    ep = _plugins()[kind]
    try:
        cls = ep.load()
    except Exception as e:  # noqa: BLE001 - a broken plugin is named, not a traceback
        raise EvalbenchError(f"dataset.source: plugin '{kind}' ({ep.value}) failed to load: {type(e).__name__}: {e}") from e
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, SourceConfig) and callable(getattr(cls, "load_split", None))):
        raise EvalbenchError(f"dataset.source: plugin '{kind}' ({ep.value}) lacks a SourceConfig Config or load_split")
    return cls
