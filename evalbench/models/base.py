"""The adapter protocol every model family implements, and the parsed ``--model`` spec."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from PIL import Image


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` argument: ``[NAME=]FAMILY_SPEC``.

    ``family`` picks the adapter module (``open_clip`` for bare specs, ``hf`` for ``hf:...``);
    ``target`` is the spec without the display name and family prefix.
    """

    name: str
    spec: str
    family: str
    target: str

    @property
    def slug(self) -> str:
        """The name as a safe folder name for ``results/<slug>/``."""
        return re.sub(r"[^A-Za-z0-9_.\-]+", "_", self.name).strip("_.") or "model"


class ModelAdapter(Protocol):
    """What the runners need from a model: two encoders and the image preprocessing.

    Encoders return un-normalised embeddings as float tensors on the adapter's device; the runners
    normalise. ``fingerprint`` changes whenever the weights or architecture do.
    """

    spec: ModelSpec
    fingerprint: str
    device: torch.device
    preprocess: Callable[[Image.Image], torch.Tensor]

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...
