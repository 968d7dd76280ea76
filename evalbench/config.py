"""Run settings: one validated model shared by the Python API, the runners and the CLI.

Every setting's type and allowed values are defined here once. The CLI reads its ``choices``
from :func:`choices`; ``evalbench.evaluate(**settings)`` and the CLI both build a
:class:`RunConfig` through :func:`make_config`, so an invalid value raises the same
:class:`~evalbench.errors.EvalbenchError` naming the setting and its allowed values.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evalbench.errors import EvalbenchError

Mode = Literal["zeroshot", "linear_probe"]
Precision = Literal["fp32", "amp"]
ProbeBackend = Literal["sklearn", "torch"]
CacheDtype = Literal["float32", "float16"]
OnBadImage = Literal["error", "skip"]

MODES: tuple[str, ...] = typing.get_args(Mode)
CACHE_DTYPES: tuple[str, ...] = typing.get_args(CacheDtype)

PositiveInt = Annotated[int, Field(ge=1)]


def default_cache_dir() -> Path:
    if os.environ.get("EVALBENCH_CACHE"):
        return Path(os.environ["EVALBENCH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "evalbench"


def _default_shard_size() -> int:
    return int(os.environ.get("EVALBENCH_SHARD_SIZE", 4096))


class RunConfig(BaseModel):
    """How a run computes: modes, folders, batching, device, probe settings. Immutable; derive a
    changed copy with ``config.model_copy(update={...})`` (not validated) or :func:`make_config`.

    ``modes`` are ``zeroshot`` and/or ``linear_probe``; ``shots`` (k per class) turn the linear
    probe into k-shot probes averaged over ``seeds`` draws; ``limit`` evaluates a seeded subset
    of at most that many images per split; ``use_cache`` False neither reads nor writes the cache.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    modes: tuple[Mode, ...] = Field(default=MODES, min_length=1)
    results_dir: Path = Path("results")
    cache_dir: Path = Field(default_factory=default_cache_dir)
    batch_size: PositiveInt = 64
    workers: Annotated[int, Field(ge=0)] = 0
    device: str = Field(default="auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    limit: PositiveInt | None = None
    precision: Precision = "fp32"
    probe_backend: ProbeBackend = "sklearn"
    probe_normalize: bool = False
    shots: tuple[PositiveInt, ...] = ()  # k-shot probes instead of the full one
    seeds: PositiveInt = 3
    use_cache: bool = True
    cache_dtype: CacheDtype = "float32"
    on_bad_image: OnBadImage = "error"  # or "skip": leave undecodable images out, and count them
    shard_size: PositiveInt = Field(default_factory=_default_shard_size)
    overwrite: bool = False
    seed: int = 0
    progress: bool = True
    trust_remote_code: bool = False  # hf: models may run code from their repository only if set

    @field_validator("modes", "shots", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """A single value or a comma-separated string stands for a one-element sequence."""
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
        return value

    @field_validator("modes")
    @classmethod
    def _no_repeats(cls, modes: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(modes))


def choices(setting: str) -> tuple[str, ...]:
    """The allowed values of a setting whose type is a Literal (or a sequence of one)."""
    annotation = RunConfig.model_fields[setting].annotation
    while typing.get_origin(annotation) is not Literal and typing.get_args(annotation):
        annotation = typing.get_args(annotation)[0]
    values = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
    if not values:
        raise KeyError(f"setting {setting!r} has no fixed choices")
    return values


def _problem(error: dict, flags: dict[str, str]) -> str:
    """One line for one pydantic error: the setting (or its CLI flag), the value, what is allowed."""
    setting = str(error["loc"][0]) if error["loc"] else "settings"
    name = flags.get(setting, setting)
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        known = ", ".join(RunConfig.model_fields)
        return f"{name}: unknown setting (known: {known})"
    if error["type"] == "literal_error":
        return f"{name}: {value!r} is not allowed (allowed: {', '.join(choices(setting))})"
    if setting == "device" and error["type"] == "string_pattern_mismatch":
        return f"{name}: unknown device {value!r} (allowed: auto, cpu, mps, cuda or cuda:N)"
    return f"{name}: {error['msg'].removeprefix('Value error, ')} (got {value!r})"


def make_config(flags: dict[str, str] | None = None, /, **settings: Any) -> RunConfig:
    """A validated RunConfig from keyword settings. Raises EvalbenchError naming the first bad
    setting (as its CLI flag when ``flags`` maps setting names to flags) and its allowed values."""
    try:
        return RunConfig(**settings)
    except ValidationError as e:
        errors = e.errors()
        others = {err["loc"][:1] for err in errors} - {errors[0]["loc"][:1]}
        more = f" (and {len(others)} more setting(s))" if others else ""
        raise EvalbenchError(_problem(errors[0], flags or {}) + more) from None
