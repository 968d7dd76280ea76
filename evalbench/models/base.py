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
    ``target`` is the spec without the display name and family prefix. A checkpoint of a sweep
    (one match of a glob spec, or a file ``evalbench watch`` found) also has ``step``, the last
    number in its file name, and ``run``, the training run it belongs to (see
    :mod:`evalbench.models.sweep`); both are None for any other model.
    """

    name: str
    spec: str
    family: str
    target: str
    step: int | None = None
    run: str | None = None

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


def logit_metadata(logit_scale, logit_bias) -> dict:
    """``logit_scale`` (as applied: exp of the stored log-scale) and ``logit_bias`` of a contrastive
    or sigmoid model, None where the model has none, and what zero-shot scores are instead."""

    def number(tensor, exp: bool = False) -> float | None:
        if not isinstance(tensor, torch.Tensor):
            return None
        value = tensor.detach().float().reshape(-1)[0]
        return float(value.exp() if exp else value)

    return {
        "logit_scale": number(logit_scale, exp=True),
        "logit_bias": number(logit_bias),
        # Zero-shot ranks classes by cosine similarity: scale * cos + bias (and a sigmoid on top)
        # is increasing in cos for scale > 0, so argmax, top-5 and AUC are unchanged.
        "zeroshot_scores": "cosine (logit_scale and logit_bias not applied)",
    }
