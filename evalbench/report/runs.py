"""Checkpoints of a training run: which run a record belongs to, its step, ``RUN@STEP`` baselines,
and the series of main scores over steps that the curves and TensorBoard draw."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pandas as pd

from evalbench.errors import EvalbenchError
from evalbench.report.tables import mode_order

# Folders that say nothing about the run: runs/exp1/checkpoints/epoch_3.pt belongs to run exp1.
GENERIC_FOLDERS = frozenset({"checkpoints", "checkpoint", "ckpts", "ckpt"})
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
# A trailing step in a model name, with its separator and an optional word: exp1-epoch_10, exp1/step100, exp1_3.
_TRAILING_STEP = re.compile(r"(?:^|[\W_]+)(?:epoch|step|iter|ckpt|checkpoint)?[\W_]*\d+$", re.IGNORECASE)


def step_of(record: dict) -> int | None:
    """``model.step`` of a record (None for a record without one: older records, plain models)."""
    step = record["model"].get("step")
    return None if step is None else int(step)


def _weights_folder(spec: str) -> str | None:
    """The run folder of a ``[hf:]ARCH@PATH`` spec's weights file: the file's folder, skipping
    generic names such as ``checkpoints``; None when the spec names no local weights file."""
    _, at, weights = spec.partition("@")
    weights = weights.replace("\\", "/")
    if not at or not ("/" in weights or weights.lower().endswith(WEIGHT_SUFFIXES)):
        return None  # ARCH@TAG: a pretrained tag, not a file
    for folder in reversed(PurePosixPath(weights).parent.parts):
        if folder not in GENERIC_FOLDERS and folder not in ("", ".", "..", "/"):
            return folder
    return None


def run_from_name(name: str) -> str:
    """A model name without its trailing step: ``exp1-epoch_10`` -> ``exp1``, ``exp1/step100`` ->
    ``exp1``, ``exp1_3`` -> ``exp1``; a name that is only a step (``epoch_3``) keeps its word
    (``epoch``), a bare number itself."""
    stripped = _TRAILING_STEP.sub("", name)
    if stripped:
        return stripped
    return re.sub(r"[\W_]*\d+$", "", name) or name


def run_of(record: dict) -> str:
    """The run a record belongs to: ``model.run`` when present; else the folder its checkpoint
    came from (``ViT-B-32@runs/exp1/checkpoints/epoch_3.pt`` -> ``exp1``); else the model name
    without its trailing step number (:func:`run_from_name`)."""
    model = record["model"]
    if model.get("run"):
        return str(model["run"])
    return _weights_folder(model.get("spec") or "") or run_from_name(model["name"])


def checkpoint_models(records: list[dict]) -> pd.DataFrame:
    """One row per model name that has a step: ``model``, ``run``, ``step`` (the first record of
    the model that says), ordered by run then step."""
    rows: dict[str, dict] = {}
    for r in records:
        step = step_of(r)
        if step is not None and r["model"]["name"] not in rows:
            rows[r["model"]["name"]] = {"model": r["model"]["name"], "run": run_of(r), "step": step}
    frame = pd.DataFrame(list(rows.values()), columns=["model", "run", "step"])
    return frame.sort_values(["run", "step", "model"], ignore_index=True)


def order_keys(records: list[dict]) -> dict[str, tuple]:
    """Model name -> sort key putting the checkpoints of a run together, by step (for
    :func:`evalbench.report.tables.model_order`); models without a step are not in it."""
    return {m.model: (m.run, 1, m.step) for m in checkpoint_models(records).itertuples()}


def resolve_baseline(records: list[dict], baseline: str | None) -> str | None:
    """The model name ``baseline`` means: a model name as it is, or ``RUN@STEP`` naming the record
    of run RUN at step STEP. EvalbenchError listing the runs and their steps for an unknown run
    or step; an unknown plain name is left to :func:`evalbench.report.compare.baseline_deltas`."""
    if baseline is None or baseline in {r["model"]["name"] for r in records}:
        return baseline
    run, at, step = baseline.rpartition("@")
    if not at or not re.fullmatch(r"-?\d+", step.strip()):
        return baseline
    table = checkpoint_models(records)
    steps = {name: list(part["step"]) for name, part in table.groupby("run", sort=True)}
    listing = "; ".join(f"{name}: {', '.join(map(str, s))}" for name, s in steps.items())
    if not steps:
        models = ", ".join(sorted({r["model"]["name"] for r in records}))
        raise EvalbenchError(f"--baseline: no model '{baseline}', and no record has a step to read it as RUN@STEP "
                             f"(models: {models})")
    if run not in steps:
        raise EvalbenchError(f"--baseline: no run '{run}' (runs and steps: {listing})")
    match = table[(table["run"] == run) & (table["step"] == int(step))]
    if match.empty:
        raise EvalbenchError(f"--baseline: run '{run}' has no step {int(step)} (steps: {', '.join(map(str, steps[run]))})")
    if len(match) > 1:
        raise EvalbenchError(f"--baseline: run '{run}' has several models at step {int(step)} "
                             f"({', '.join(match['model'])}); name one of them")
    return str(match["model"].iloc[0])


def curve_series(scores: dict[str, pd.DataFrame], checkpoints: pd.DataFrame) -> pd.DataFrame:
    """The points the curves draw: one row per (mode, column, run, step) with ``model`` and
    ``value`` (the main score, a fraction), for every checkpoint of ``checkpoints`` (from
    :func:`checkpoint_models`) in the score tables of ``scores``. ``column`` is a task, or a
    ``mean(<suite>)`` where the model has every task of the suite (the score tables' rule).
    Ordered by mode, column, run, step; empty without checkpoints."""
    columns = ["mode", "column", "run", "step", "model", "value"]
    rows = []
    for mode in sorted(scores, key=mode_order):
        table = scores[mode]
        for c in checkpoints.itertuples():
            if c.model not in table.index:
                continue
            for column in table.columns:
                value = table.at[c.model, column]
                if pd.notna(value):
                    rows.append((mode, column, c.run, int(c.step), c.model, float(value)))
    frame = pd.DataFrame(rows, columns=columns)
    order = {m: i for i, m in enumerate(sorted(scores, key=mode_order))}
    return frame.sort_values(["mode", "column", "run", "step"], key=lambda s: s.map(order) if s.name == "mode" else s,
                             ignore_index=True)


def has_curves(checkpoints: pd.DataFrame) -> bool:
    """Curves are drawn only when some run has two steps or more."""
    return bool(len(checkpoints)) and bool((checkpoints.groupby("run")["step"].nunique() >= 2).any())
