"""Model families behind ``--model``: parsing the spec and loading the right adapter.

Each family is one module exposing an adapter class; the spec's prefix picks it
(``hf:...`` -> transformers, ``py:...`` -> a user factory, an installed plugin's entry-point name
-> that plugin, anything else -> open_clip).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import torch

from evalbench.errors import EvalbenchError, ModelLoadError
from evalbench.models.base import ModelAdapter, ModelSpec

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# Checkpoints that ship with the package, usable offline: name -> open_clip spec.
BUNDLED = {
    "demo-early": f"{ASSETS / 'demo-clip.json'}@{ASSETS / 'demo-early.safetensors'}",
    "demo-final": f"{ASSETS / 'demo-clip.json'}@{ASSETS / 'demo-final.safetensors'}",
}

# family -> module with an adapter class ``Adapter``, a function ``fingerprint(spec)`` and,
# optionally, ``code_version()``.
FAMILIES = {
    "open_clip": "evalbench.models.openclip",
    "hf": "evalbench.models.hf",
    "py": "evalbench.models.custom",
}
# Installed packages add families under this entry-point group: ``NAME = pkg.module``, where the
# module (or object) has ``Adapter`` and ``fingerprint`` like the built-in ones; ``NAME:ARGS``
# then picks it. Built-in names win over plugins of the same name.
ENTRY_POINT_GROUP = "evalbench.models"


def _plugin(family: str) -> EntryPoint | None:
    if not re.fullmatch(r"[A-Za-z][\w.-]*", family):
        return None
    return next((ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == family), None)


def family_module(family: str):
    """The module (or plugin object) implementing ``family``; EvalbenchError for a broken plugin."""
    if family in FAMILIES:
        return importlib.import_module(FAMILIES[family])
    ep = _plugin(family)
    if ep is None:
        raise EvalbenchError(f"--model: unknown model family '{family}'")
    try:
        module = ep.load()
    except Exception as e:  # noqa: BLE001 - a broken plugin is named, not a traceback
        raise EvalbenchError(f"--model: plugin '{family}' ({ep.value}) failed to load: {type(e).__name__}: {e}") from e
    if not all(callable(getattr(module, a, None)) for a in ("Adapter", "fingerprint")):
        raise EvalbenchError(f"--model: plugin '{family}' ({ep.value}) lacks Adapter or fingerprint")
    return module


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
    # 'C:\...' is a path, not a family
    if not colon or len(family) == 1 or (family not in FAMILIES and _plugin(family) is None):
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


def load_model(spec: ModelSpec, device: torch.device, trust_remote_code: bool = False) -> ModelAdapter:
    """Instantiate the family's adapter on ``device``; raises EvalbenchError for bad specs.
    ``trust_remote_code`` reaches the families whose adapters take it (hf)."""
    adapter = family_module(spec.family).Adapter
    if trust_remote_code and "trust_remote_code" in inspect.signature(adapter).parameters:
        return adapter(spec, device, trust_remote_code=True)
    return adapter(spec, device)


def model_fingerprint(spec: ModelSpec) -> str:
    """The weights' identity without loading them (cheap: hashes files, builds nothing)."""
    return family_module(spec.family).fingerprint(spec)


def code_version(spec: ModelSpec) -> str:
    """The versions of the code that turns the weights into embeddings (the family's library and
    adapter), from the family's optional ``code_version()``; "" for families without one. Cache
    keys hold it next to the fingerprint: a library upgrade may change features, not weights."""
    function = getattr(family_module(spec.family), "code_version", None)
    return function() if callable(function) else ""


class LazyModel:
    """A model loaded on first use, so that a fully cached run never builds one."""

    def __init__(self, spec: ModelSpec, device: torch.device, trust_remote_code: bool = False):
        self.spec, self.device, self.trust_remote_code = spec, device, trust_remote_code
        self.fingerprint = model_fingerprint(spec)
        self.code_version = code_version(spec)
        self._model: ModelAdapter | None = None
        # The run's other models, for passes over the data shared with them (evalbench.cohort).
        self.cohort = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> ModelAdapter:
        """The adapter, loaded on first call; ModelLoadError naming the model if loading fails."""
        if self._model is None:
            try:
                self._model = load_model(self.spec, self.device, self.trust_remote_code)
            except Exception as e:  # noqa: BLE001 - any failure to load is this model's, reported by name
                reason = str(e).removeprefix("--model: ") if isinstance(e, EvalbenchError) else f"{type(e).__name__}: {e}"
                reason = " ".join(reason.split())  # one line; torch's size-mismatch lists run long
                raise ModelLoadError(self.spec.name, self.spec.spec, reason if len(reason) <= 400 else reason[:397] + "...") from e
            # A hub model's identity may only be known once downloaded (its commit).
            self.fingerprint = getattr(self._model, "fingerprint", self.fingerprint)
        return self._model

    def release(self) -> None:
        """Drop the loaded adapter: a sweep keeps only the models still to be evaluated (some of them
        loaded early by a shared data pass, see :mod:`evalbench.cohort`)."""
        self._model = None

    @functools.cached_property
    def step(self) -> int | None:
        """The training step its record holds (a sweep's checkpoint; None otherwise), read from
        the checkpoint only when first asked: a fully cached rerun never opens the file."""
        from evalbench.models.sweep import recorded_step

        return recorded_step(self.spec)
