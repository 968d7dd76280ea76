"""Checkpoint sweeps: a ``--model`` spec whose weights part is a glob stands for every match.

``ViT-B-32@runs/exp1/checkpoints/epoch_*.pt``, ``my-arch.json@ckpts/step_*.safetensors`` and
``hf:BASE@ft/*.pth`` each expand to one model per matching file, in natural order (``epoch_2``
before ``epoch_10``). A match is named after its file stem (``NAME/stem`` with a ``NAME=``
prefix) and carries

- ``step``: the last number in the file stem (``epoch_3`` -> 3); the record holds the
  checkpoint's own ``step`` (else ``epoch``) field instead when it has one (see
  :func:`recorded_step`);
- ``run``: ``NAME`` when given, else the folder the checkpoint is in, skipping a generic folder
  name (``runs/exp1/checkpoints/epoch_3.pt`` -> ``exp1``).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import re
from pathlib import Path

from evalbench.errors import EvalbenchError
from evalbench.models import parse_model_spec
from evalbench.models.base import ModelSpec
from evalbench.tasks.loader import natural_key

log = logging.getLogger(__name__)

GLOB_CHARS = frozenset("*?[")
# Folder names that say nothing about the run: the run is the folder above them.
GENERIC_FOLDERS = frozenset({"checkpoints", "checkpoint", "ckpts", "ckpt"})
# Checkpoint fields read as the step, first found wins.
STEP_FIELDS = ("step", "epoch")


def _given_name(text: str) -> tuple[str | None, str]:
    """(NAME or None, SPEC) of ``[NAME=]SPEC``, split as :func:`parse_model_spec` splits it."""
    name, sep, spec = text.strip().partition("=")
    return (name, spec) if sep else (None, text.strip())


def weights_part(spec: ModelSpec) -> tuple[str, str] | None:
    """``(prefix, weights)`` with ``spec.spec == prefix + "@" + weights``, or None for a spec
    without a weights part (``ViT-B-32``, ``py:...``). open_clip splits at the first ``@`` (as its
    adapter does), ``hf:`` and plugins at the last."""
    if spec.family == "py" or "@" not in spec.spec:
        return None
    prefix, _, weights = spec.spec.partition("@") if spec.family == "open_clip" else spec.spec.rpartition("@")
    return (prefix, weights) if prefix and weights else None


def is_glob(weights: str) -> bool:
    """True for a weights part with glob characters that is not itself an existing file."""
    return bool(GLOB_CHARS & set(weights)) and not Path(weights).expanduser().exists()


def step_from_name(path: str | Path) -> int | None:
    """The last whole number in the file stem: ``epoch_12.pt`` -> 12, ``step-000500`` -> 500."""
    numbers = re.findall(r"\d+", Path(path).stem)
    return int(numbers[-1]) if numbers else None


def run_name(path: str | Path) -> str:
    """The folder a checkpoint is in, skipping generic ones (``checkpoints``, ``ckpts``, ...)."""
    folder = Path(path).expanduser().resolve().parent
    while folder.name.lower() in GENERIC_FOLDERS and folder.parent != folder:
        folder = folder.parent
    return folder.name or str(folder)


def checkpoint_spec(prefix: str, path: str | Path, name: str | None = None) -> ModelSpec:
    """The model for one checkpoint of a sweep: ``prefix@path``, named ``name/stem`` (``stem``
    without ``name``), with its ``step`` from the file name and its ``run`` (``name``, else the
    folder). Raises EvalbenchError for a bad prefix."""
    stem = Path(path).stem
    display = f"{name}/{stem}" if name else stem
    spec = parse_model_spec(f"{display}={prefix}@{path}")
    return dataclasses.replace(spec, step=step_from_name(path), run=name or run_name(path))


def expand_model_spec(text: str) -> list[ModelSpec]:
    """One ModelSpec per model a ``--model`` argument stands for: itself, or every file its
    weights glob matches, in natural order. Raises EvalbenchError for a glob that matches no
    file, naming the pattern."""
    spec = parse_model_spec(text)
    part = weights_part(spec)
    if part is None or not is_glob(part[1]):
        return [spec]
    prefix, pattern = part
    matches = [m for m in glob.glob(str(Path(pattern).expanduser()), recursive=True) if Path(m).is_file()]
    if not matches:
        raise EvalbenchError(f"--model: {pattern}: the glob matches no checkpoint file")
    name, _ = _given_name(text)
    specs = [checkpoint_spec(prefix, m, name) for m in sorted(matches, key=natural_key)]
    log.info("%s: %d checkpoints (%s ... %s)", pattern, len(specs), specs[0].name, specs[-1].name)
    return specs


def expand_model_specs(texts: list[str | ModelSpec]) -> list[ModelSpec]:
    """:func:`expand_model_spec` over several arguments; ModelSpecs pass through unchanged."""
    return [s for t in texts for s in ([t] if isinstance(t, ModelSpec) else expand_model_spec(t))]


def own_step(path: str | Path) -> int | None:
    """The checkpoint's own ``step`` (else ``epoch``) field, read cheaply: a safetensors file's
    header metadata, or a ``torch.save`` dict's top-level keys through a memory-mapped
    ``weights_only`` load (the tensors are not read). None when the file has neither, cannot be
    read that way (the legacy non-zip format), or is broken: the load reports that."""
    path = Path(path).expanduser()
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                fields = f.metadata() or {}
        else:
            import torch

            fields = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - a missing step is no error; the load names a broken file
        log.debug("%s: no step read from the checkpoint (%s: %s)", path, type(e).__name__, e)
        return None
    if not isinstance(fields, dict):
        return None
    for key in STEP_FIELDS:
        value = fields.get(key)
        if isinstance(value, bool):
            continue
        try:
            return int(value)
        except (TypeError, ValueError):
            continue
    return None


def recorded_step(spec: ModelSpec) -> int | None:
    """The step a record of ``spec`` holds: the checkpoint's own field when it has one, else the
    number in the file name; None for a model that is not part of a sweep."""
    if spec.run is None:
        return spec.step
    part = weights_part(spec)
    found = own_step(part[1]) if part else None
    return found if found is not None else spec.step
