"""Models from your own code: ``py:MODULE:FACTORY``.

evalbench imports ``MODULE`` (it must be importable: installed, or on ``PYTHONPATH``) and calls
``FACTORY(device=device)`` (or ``FACTORY()`` when it takes no ``device``). The factory returns an
object with:

- ``preprocess``: a callable PIL.Image -> float tensor (C, H, W);
- ``encode_images(pixels)``: (N, C, H, W) -> (N, D) embeddings, not necessarily normalised;
- ``encode_texts(texts)``: list of str -> (N, D) embeddings;
- ``device`` (optional): where its weights live; the requested device when absent.

The feature cache is keyed on the module file's digest. A module whose factory reads weights
from elsewhere should define ``evalbench_fingerprint() -> str`` (e.g. a digest of those weights),
or else cached features survive a change of weights; ``--no-cache`` sidesteps the cache.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path
from types import ModuleType

import torch

from evalbench.errors import EvalbenchError
from evalbench.models.base import ModelSpec
from evalbench.models.checkpoint import file_digest

REQUIRED = ("preprocess", "encode_images", "encode_texts")


def _import(spec: ModelSpec) -> tuple[ModuleType, str]:
    """The user's module and factory name; EvalbenchError when either cannot be found."""
    module_name, colon, factory = spec.target.rpartition(":")
    if not colon or not module_name or not factory.isidentifier():
        raise EvalbenchError(f"--model: py:{spec.target}: expected py:MODULE:FACTORY, e.g. py:mypkg.models:build")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise EvalbenchError(
                f"--model: py:{spec.target}: no module named '{e.name}' (install it or add its folder to PYTHONPATH)"
            ) from None
        raise EvalbenchError(f"--model: py:{spec.target}: importing {module_name} failed: {e}") from e
    except Exception as e:  # noqa: BLE001 - the user's module failed; say where
        raise EvalbenchError(
            f"--model: py:{spec.target}: importing {module_name} failed: {type(e).__name__}: {e}"
        ) from e
    if not callable(getattr(module, factory, None)):
        raise EvalbenchError(f"--model: py:{spec.target}: module {module_name} has no callable '{factory}'")
    return module, factory


def fingerprint(spec: ModelSpec) -> str:
    """Digest of the target, the module's source file and ``evalbench_fingerprint()`` if the
    module defines it. Imports the module but builds no model."""
    module, _ = _import(spec)
    source = getattr(module, "__file__", None)
    parts = [spec.target, file_digest(Path(source)) if source and Path(source).is_file() else "no-file"]
    custom = getattr(module, "evalbench_fingerprint", None)
    if callable(custom):
        parts.append(str(custom()))
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]


def _call_factory(factory, device: torch.device):
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        params = {}
    takes_device = "device" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return factory(device=device) if takes_device else factory()


class FactoryAdapter:
    """Wraps what the user's factory returned, checking it follows the adapter protocol."""

    def __init__(self, spec: ModelSpec, device: torch.device):
        self.spec = spec
        self.fingerprint = fingerprint(spec)
        module, name = _import(spec)
        model = _call_factory(getattr(module, name), device)
        missing = [a for a in REQUIRED if not callable(getattr(model, a, None))]
        if missing:
            raise EvalbenchError(
                f"--model: py:{spec.target}: the factory returned a {type(model).__name__} without "
                f"{', '.join(missing)} (see docs/models.md for the adapter protocol)"
            )
        self.model = model
        self.preprocess = model.preprocess
        self.device = torch.device(getattr(model, "device", device))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_images(pixels.to(self.device)).float()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_texts(list(texts)).float()


Adapter = FactoryAdapter
