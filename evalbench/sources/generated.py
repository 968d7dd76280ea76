"""Datasets made on this machine: materialised once into the cache, then read as an image folder.

``dataset: {source: generated, generator: NAME, ...}`` names a generator from :data:`GENERATORS`.
The generator returns every split's images; they are written once to
``<cache_dir>/generated/<key>/<split>/<classname>/<index>.png`` (built in a temporary folder and
renamed into place, so a reader never sees half a dataset) and loaded by
:class:`~evalbench.sources.imagefolder.ImageFolderSource`. ``key`` hashes the config and the
generator's version, so changing either makes a new folder.

Generators (the Python here names generators, never tasks):

``sklearn-digits``
    scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes ``zero``..``nine``).
    Each 8x8 value v in 0..16 becomes grey ``255 - round(v * 255 / 16)`` (dark ink on white) in
    an 8x8 PNG; the model's preprocessing does the upsampling. The split is a fixed stratified
    partition: with the default ``seed: 0`` and ``sizes: {train: 1000, val: 297, test: 500}``,
    test is drawn first from all 1,797, then val from the rest, then train from what remains.
``shapes``
    Synthetic ``image_size`` px pictures of one filled shape (:data:`SHAPES`) in one colour
    (:data:`COLORS`) on a random muted background, at random size, position and small rotation.
    ``attribute: shape`` labels by shape, ``attribute: color`` by colour; the other attribute is
    random. Classes are balanced. Each split draws from its own seeded stream
    (:func:`split_rng`), so splits never share images. :func:`render_shape` is public so
    training code can draw more images from other seeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.sources.base import SourceConfig, SplitData
from evalbench.sources.imagefolder import ImageFolderConfig, ImageFolderSource

log = logging.getLogger(__name__)


class GeneratedConfig(SourceConfig):
    generator: str
    sizes: dict[str, int]
    """Images per split, e.g. ``{train: 600, val: 300, test: 600}``."""
    seed: int = 0
    """Seeds the split partition (sklearn-digits) or every split's stream (shapes)."""
    attribute: str | None = None
    """shapes only: ``shape`` or ``color``, the attribute that is the label."""
    classes: list[str] | None = None
    """shapes only: which shapes or colours to use (default: all of them)."""
    image_size: int = 64
    """shapes only: side of the square images, in pixels."""


# A generator returns {split: [(image, class name), ...]} for the config's sizes.
Samples = dict[str, list[tuple[Image.Image, str]]]
Generator = Callable[[GeneratedConfig], Samples]


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The random stream of one split: depends on both the seed and the split's name."""
    return np.random.default_rng([seed, zlib.crc32(split.encode())])


# ---------------------------------------------------------------------------------------------
# sklearn-digits

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digit_levels_to_image(levels: np.ndarray) -> Image.Image:
    """An 8x8 array of ink counts 0..16 as an 8x8 greyscale image, dark ink on white."""
    grey = 255 - np.rint(np.asarray(levels, dtype=np.float64) * 255 / 16)
    return Image.fromarray(grey.clip(0, 255).astype(np.uint8), mode="L")


def stratified_digit_split(labels: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Indices per split: a stratified partition, later splits drawn from what earlier ones left.

    Splits are drawn in the order test, val, then any others by name, so a split's content does
    not depend on the size of the splits drawn after it.
    """
    from sklearn.model_selection import train_test_split

    order = sorted(sizes, key=lambda s: ({"test": 0, "val": 1}.get(s, 2), s))
    remaining = np.arange(len(labels))
    out = {}
    for split in order:
        n = sizes[split]
        if n == len(remaining):
            take = remaining
        else:
            take, remaining = train_test_split(
                remaining, train_size=n, random_state=seed, stratify=labels[remaining]
            )
        out[split] = np.sort(take)
    return out


def generate_sklearn_digits(config: GeneratedConfig) -> Samples:
    from sklearn.datasets import load_digits

    _reject_keys(config, "attribute", "classes")
    digits = load_digits()
    total = sum(config.sizes.values())
    if total > len(digits.target):
        raise EvalbenchError(f"dataset.sizes: {total} images asked for, sklearn-digits has {len(digits.target)}")
    parts = stratified_digit_split(digits.target, config.sizes, config.seed)
    return {
        split: [(digit_levels_to_image(digits.images[i]), DIGIT_NAMES[digits.target[i]]) for i in idx]
        for split, idx in parts.items()
    }


# ---------------------------------------------------------------------------------------------
# shapes

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 215, 30),
    "purple": (140, 40, 180),
    "orange": (250, 130, 20),
}


def _star(n_points: int, inner: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n_points):
        r = 1.0 if k % 2 == 0 else inner
        a = math.pi * k / n_points - math.pi / 2
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _regular(n: int, phase: float) -> list[tuple[float, float]]:
    return [(math.cos(2 * math.pi * k / n + phase), math.sin(2 * math.pi * k / n + phase)) for k in range(n)]


_ARM = 0.33
# Outlines on the unit square [-1, 1]^2; None means a circle.
SHAPES: dict[str, list[tuple[float, float]] | None] = {
    "circle": None,
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "star": _star(5, 0.42),
    "cross": [
        (-_ARM, -1), (_ARM, -1), (_ARM, -_ARM), (1, -_ARM), (1, _ARM), (_ARM, _ARM),
        (_ARM, 1), (-_ARM, 1), (-_ARM, _ARM), (-1, _ARM), (-1, -_ARM), (-_ARM, -_ARM),
    ],
    "hexagon": _regular(6, 0.0),
}

_SUPERSAMPLE = 4


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A muted background: a random light or dark tint with a gentle gradient and noise."""
    base = rng.uniform(0.0, 1.0) < 0.5
    lo, hi = (150, 250) if base else (20, 110)
    tint = rng.uniform(lo, hi) + rng.uniform(-25, 25, size=3)
    ramp = np.linspace(-1, 1, size)
    angle = rng.uniform(0, 2 * math.pi)
    grad = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    img = tint[None, None, :] + rng.uniform(0, 30) * grad[:, :, None]
    img = img + rng.normal(0, rng.uniform(0, 8), size=img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8), mode="RGB")


def render_shape(rng: np.random.Generator, shape: str, color: str, size: int = 64) -> Image.Image:
    """One ``size`` px RGB picture of ``shape`` filled with ``color`` on a random background.

    Scale (30-70% of the side), position, rotation (within 20 degrees), colour jitter and
    background are drawn from ``rng``. KeyError for an unknown shape or colour.
    """
    outline, rgb = SHAPES[shape], COLORS[color]
    img = _background(rng, size)
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    radius = rng.uniform(0.15, 0.35) * big
    cx, cy = (rng.uniform(radius + 1, big - radius - 1) for _ in range(2))
    if outline is None:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        a = math.radians(rng.uniform(-20, 20))
        ca, sa = math.cos(a), math.sin(a)
        pts = [(cx + radius * (x * ca - y * sa), cy + radius * (x * sa + y * ca)) for x, y in outline]
        draw.polygon(pts, fill=255)
    mask = mask.resize((size, size), Image.LANCZOS)
    jitter = np.asarray(rgb, dtype=np.float64) + rng.uniform(-20, 20, size=3)
    fill = Image.new("RGB", (size, size), tuple(int(v) for v in jitter.clip(0, 255)))
    img.paste(fill, (0, 0), mask)
    if rng.uniform() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return img


def generate_shapes(config: GeneratedConfig) -> Samples:
    vocab = {"shape": SHAPES, "color": COLORS}
    if config.attribute not in vocab:
        raise EvalbenchError(f"dataset.attribute: must be one of shape, color for generator shapes (got {config.attribute!r})")
    classes = config.classes or list(vocab[config.attribute])
    unknown = [c for c in classes if c not in vocab[config.attribute]]
    if unknown:
        raise EvalbenchError(f"dataset.classes: unknown {config.attribute}(s) {unknown}; known: {list(vocab[config.attribute])}")
    other = list(vocab["color" if config.attribute == "shape" else "shape"])
    out: Samples = {}
    for split, n in config.sizes.items():
        rng = split_rng(config.seed, split)
        samples = []
        for i in range(n):
            label, rest = classes[i % len(classes)], other[rng.integers(len(other))]
            shape, color = (label, rest) if config.attribute == "shape" else (rest, label)
            samples.append((render_shape(rng, shape, color, config.image_size), label))
        out[split] = samples
    return out


def _reject_keys(config: GeneratedConfig, *keys: str) -> None:
    for key in keys:
        if key in config.model_fields_set:
            raise EvalbenchError(f"dataset.{key}: not used by generator {config.generator}")


def shapes_classnames(config: GeneratedConfig) -> list[str]:
    return list(config.classes or (SHAPES if config.attribute == "shape" else COLORS))


@dataclass(frozen=True)
class GeneratorEntry:
    make: Generator
    classnames: Callable[[GeneratedConfig], list[str]]
    version: int
    """Bump whenever the output changes: it is part of the cache key, so stale folders are never reused."""


GENERATORS: dict[str, GeneratorEntry] = {
    "sklearn-digits": GeneratorEntry(generate_sklearn_digits, lambda config: list(DIGIT_NAMES), 1),
    "shapes": GeneratorEntry(generate_shapes, shapes_classnames, 1),
}


# ---------------------------------------------------------------------------------------------


def _write_samples(samples: Samples, root: Path) -> None:
    for split, items in samples.items():
        width = max(5, len(str(len(items))))
        for index, (image, classname) in enumerate(items):
            folder = root / split / classname
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{index:0{width}d}.png")


class GeneratedSource:
    Config = GeneratedConfig

    def __init__(self, config: GeneratedConfig, task_dir: Path, cache_dir: Path):
        if config.generator not in GENERATORS:
            raise EvalbenchError(f"dataset.generator: unknown generator '{config.generator}' (known: {', '.join(GENERATORS)})")
        bad = {s: n for s, n in config.sizes.items() if n < 1}
        if not config.sizes or bad:
            raise EvalbenchError(f"dataset.sizes: need at least one split, each with >= 1 image (got {dict(config.sizes)})")
        self.config = config
        self.generator = GENERATORS[config.generator]
        blob = json.dumps({"config": config.model_dump(), "version": self.generator.version}, sort_keys=True)
        self.key = f"{config.generator}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
        # Absolute: the image folder below resolves a relative path against the task's folder,
        # not the working directory that a relative --cache-dir means.
        self.root = Path(cache_dir).absolute() / "generated" / self.key
        if not self.root.is_dir():
            self._materialise(self.generator.make)
        self._folder = ImageFolderSource(ImageFolderConfig(source="imagefolder", path=str(self.root)), task_dir, cache_dir)

    def _materialise(self, fn: Generator) -> None:
        log.info("generating %s into %s", self.config.generator, self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.key}-", dir=self.root.parent))
        try:
            _write_samples(fn(self.config), tmp)
            os.rename(tmp, self.root)
        except OSError:
            # Another process finished the same folder first: theirs is identical, keep it.
            if not self.root.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_split(self, split: str) -> SplitData:
        if split not in self.config.sizes:  # the generator's splits, not whatever folders exist
            raise MissingSplitError(split, list(self.config.sizes), f"generator {self.config.generator} (dataset.sizes)")
        return self._folder.load_split(split)

    def fingerprint(self) -> str:
        return self.key

    def classnames(self) -> list[str] | None:
        return self.generator.classnames(self.config)

    def templates(self) -> list[str] | None:
        return None
