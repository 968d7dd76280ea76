"""Run settings shared by the API, the runners and the CLI."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MODES = ("zeroshot", "linear_probe")


def default_cache_dir() -> Path:
    if os.environ.get("EVALBENCH_CACHE"):
        return Path(os.environ["EVALBENCH_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "evalbench"


@dataclass
class RunConfig:
    modes: tuple[str, ...] = MODES
    results_dir: Path = Path("results")
    cache_dir: Path = field(default_factory=default_cache_dir)
    batch_size: int = 64
    workers: int = 0
    device: str = "auto"
    limit: int | None = None
    precision: str = "fp32"
    probe_backend: str = "sklearn"
    probe_normalize: bool = False
    shots: tuple[int, ...] = ()  # k-shot probes instead of the full one
    seeds: int = 3
    use_cache: bool = True
    cache_dtype: str = "float32"
    on_bad_image: str = "error"  # or "skip": leave undecodable images out, and count them
    shard_size: int = field(default_factory=lambda: int(os.environ.get("EVALBENCH_SHARD_SIZE", 4096)))
    overwrite: bool = False
    seed: int = 0
    progress: bool = True
    trust_remote_code: bool = False  # hf: models may run code from their repository only if set
