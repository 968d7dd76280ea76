"""Model families behind ``--model``: parsing the spec and loading the right adapter.

Each family is one module exposing an adapter class; the spec's prefix picks it
(``hf:...`` -> transformers, anything else -> open_clip).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from evalbench.errors import EvalbenchError
from evalbench.models.base import ModelAdapter, ModelSpec

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# Checkpoints that ship with the package, usable offline: name -> open_clip spec.
BUNDLED = {
    "demo-early": f"{ASSETS / 'demo-clip.json'}@{ASSETS / 'demo-early.safetensors'}",
    "demo-final": f"{ASSETS / 'demo-clip.json'}@{ASSETS / 'demo-final.safetensors'}",
}

# family -> module with an adapter class ``Adapter`` and a function ``fingerprint(spec)``.
FAMILIES = {
    "open_clip": "evalbench.models.openclip",
}


def parse_model_spec(text: str) -> ModelSpec:
    """``[NAME=]SPEC`` -> ModelSpec. Bundled names (``demo-final``) expand to their files."""
    text = text.strip()
    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = "", text
    if not spec or (sep and not name):
        raise EvalbenchError(f"--model: empty name or spec in '{text}'")
    spec = BUNDLED.get(spec, spec)
    family, colon, target = spec.partition(":")
    if not colon or family not in FAMILIES or len(family) == 1:  # 'C:\...' is a path, not a family
        family, target = "open_clip", spec
    display = name or _default_name(text)
    return ModelSpec(name=display, spec=spec, family=family, target=target)


def _default_name(text: str) -> str:
    """A short display name: ``ARCH@PATH`` becomes ``arch-stem@file-stem``."""
    arch, _, weights = text.partition("@")
    if arch.endswith(".json"):
        arch = Path(arch).stem
    if "/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")):
        weights = Path(weights).stem
    return f"{arch}@{weights}" if weights else arch


def load_model(spec: ModelSpec, device: torch.device) -> ModelAdapter:
    """Instantiate the family's adapter on ``device``; raises EvalbenchError for bad specs."""
    return importlib.import_module(FAMILIES[spec.family]).Adapter(spec, device)


def model_fingerprint(spec: ModelSpec) -> str:
    """The weights' identity without loading them (cheap: hashes files, builds nothing)."""
    return importlib.import_module(FAMILIES[spec.family]).fingerprint(spec)


class LazyModel:
    """A model loaded on first use, so that a fully cached run never builds one."""

    def __init__(self, spec: ModelSpec, device: torch.device):
        self.spec, self.device = spec, device
        self.fingerprint = model_fingerprint(spec)
        self._model: ModelAdapter | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> ModelAdapter:
        if self._model is None:
            self._model = load_model(self.spec, self.device)
        return self._model
