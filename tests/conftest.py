"""Offline fixtures: a tiny open_clip architecture and tiny datasets in each local layout."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# The default cache (generated data, checkpoint digests) of the tests lives in a temporary folder.
os.environ["EVALBENCH_CACHE"] = tempfile.mkdtemp(prefix="evalbench-test-cache-")

# Property tests are derandomized by default, so the suite never fails at random (CI and
# `make test` alike). `HYPOTHESIS_PROFILE=explore make test` draws fresh, many more examples.
settings.register_profile("default", derandomize=True, database=None, deadline=None, max_examples=50)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SPLIT_SIZES = {"train": 18, "val": 9, "test": 12}


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory) -> Path:
    """Path of a tiny open_clip model config (2-layer, width-64 ViT at 32 px)."""
    path = tmp_path_factory.mktemp("arch") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def make_image(colour: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    base = np.array(COLOURS[colour], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def colour_samples(split: str):
    rng = np.random.default_rng(["train", "val", "test"].index(split))
    for i in range(SPLIT_SIZES[split]):
        name = CLASSES[i % len(CLASSES)]
        yield f"{split}-{i:03d}", name, make_image(name, rng)


@pytest.fixture(scope="session")
def imagefolder_root(tmp_path_factory) -> Path:
    """``root/SPLIT/CLASS/*.png`` with three colour classes."""
    root = tmp_path_factory.mktemp("imagefolder")
    for split in SPLIT_SIZES:
        for key, name, image in colour_samples(split):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            image.save(root / split / name / f"{key}.png")
    return root


@pytest.fixture(scope="session")
def webdataset_root(tmp_path_factory) -> Path:
    """CLIP_benchmark's layout: SPLIT/nshards.txt, SPLIT/{0,1}.tar, classnames.txt, templates."""
    root = tmp_path_factory.mktemp("wds")
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of {c}.\na {c} square.\n")
    for split in SPLIT_SIZES:
        (root / split).mkdir()
        samples = list(colour_samples(split))
        shards = [samples[::2], samples[1::2]]
        (root / split / "nshards.txt").write_text(f"{len(shards)}\n")
        for n, shard in enumerate(shards):
            with tarfile.open(root / split / f"{n}.tar", "w") as tar:
                for key, name, image in shard:
                    buf = io.BytesIO()
                    image.save(buf, format="PNG")
                    for ext, data in (("png", buf.getvalue()), ("cls", str(CLASSES.index(name)).encode())):
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="session")
def hf_root(tmp_path_factory) -> Path:
    """A ``save_to_disk`` DatasetDict with an Image column and a ClassLabel column whose names
    are in a different order than the task's class names."""
    import datasets

    names = ["blue", "red", "green"]  # deliberately not CLASSES' order
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    for split in SPLIT_SIZES:
        rows = {"image": [], "label": []}
        for _, name, image in colour_samples(split):
            rows["image"].append(image)
            rows["label"].append(names.index(name))
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    root = tmp_path_factory.mktemp("hf") / "colours"
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


def write_task(folder: Path, name: str, dataset: dict, **overrides) -> Path:
    task = {
        "name": name,
        "version": 1,
        "description": "three colours",
        "dataset": dataset,
        "splits": {"train": "train", "val": "val", "test": "test"},
        "classnames": CLASSES,
        "templates": ["a photo of {c}.", "a {c} square."],
        "main_metric": "acc1",
    }
    task.update(overrides)
    path = folder / f"{name}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(task, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory, imagefolder_root, webdataset_root, hf_root) -> Path:
    """A folder of tasks over the three layouts, for ``--tasks-dir``."""
    folder = tmp_path_factory.mktemp("tasks")
    write_task(folder, "colours-folder", {"source": "imagefolder", "path": str(imagefolder_root)})
    write_task(folder, "colours-wds", {"source": "webdataset", "path": str(webdataset_root)})
    write_task(folder, "colours-hf", {"source": "hf", "path": str(hf_root)})
    return folder


# A Hugging Face hub without the network: its cache folder, its answers, and counting recomputation.


def hub_file(cache: Path, repo_id: str, filename: str, content: bytes, commit: str) -> Path:
    """Put ``content`` into a Hugging Face cache folder as a download of ``filename`` at ``commit``
    would (blob named by its sha256, linked from the snapshot), and point ``main`` at ``commit``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return link


class FakeHub:
    """``get_hf_file_metadata`` as the hub answers it online: commit and etag per file."""

    def __init__(self, files: dict[tuple[str, str], tuple[str, str]]):
        self.files, self.asked = files, []

    def __call__(self, url, *args, **kwargs):
        import huggingface_hub
        from huggingface_hub.errors import EntryNotFoundError

        self.asked.append(url)
        for (repo, name), (commit, etag) in self.files.items():
            if f"/{repo}/resolve/" in url and url.endswith(f"/{name}"):
                return huggingface_hub.HfFileMetadata(commit_hash=commit, etag=etag, location=url, size=1,
                                                      xet_file_data=None)
        raise EntryNotFoundError(f"404: {url}")


class Counts:
    """How often the image features and the text classifier were computed."""

    def __init__(self, monkeypatch):
        import evalbench.runners as runners

        self.features = self.classifiers = 0
        extract, build = runners.extract_shared, runners.build_zeroshot_classifier

        def counted_extract(*args, **kwargs):
            self.features += 1
            return extract(*args, **kwargs)

        def counted_build(*args, **kwargs):
            self.classifiers += 1
            return build(*args, **kwargs)

        monkeypatch.setattr(runners, "extract_shared", counted_extract)
        monkeypatch.setattr(runners, "build_zeroshot_classifier", counted_build)

    def take(self) -> tuple[int, int]:
        out = (self.features, self.classifiers)
        self.features = self.classifiers = 0
        return out
