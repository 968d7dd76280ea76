"""Cache keys hold everything that changes features: for an open_clip ``ARCH@TAG`` the resolved
weights file, the tag's preprocessing config and open_clip's version; for ``hf:`` hub models the
resolved commit; for every model ``--precision``. A change of each makes a rerun recompute the
image features (and the text classifier where the text side changes too); no change, no work."""

from __future__ import annotations

import hashlib
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest
import torch

import evalbench.runners as runners
from evalbench.cli import main
from evalbench.models import LazyModel, model_fingerprint, parse_model_spec
from evalbench.records import read_record

from conftest import Counts, FakeHub, hub_file, write_task

REPO = "evalbench-tests/tiny-clip"
WEIGHTS = "open_clip_model.safetensors"  # what open_clip prefers to its default .bin name
TAG = "evalbench_test"
CPU = torch.device("cpu")


def tiny_weights(seed: int) -> bytes:
    import open_clip
    from safetensors.torch import save

    torch.manual_seed(seed)
    return save(open_clip.create_model("tiny-clip").state_dict())


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def tiny_tag(tiny_arch, hub_cache, monkeypatch) -> dict:
    """``tiny-clip@evalbench_test``: the tiny architecture with a pretrained tag whose weights live
    on the hub (here: in the local cache only), as open_clip's own tags do."""
    import open_clip
    import open_clip.pretrained as pretrained

    open_clip.add_model_config(tiny_arch)  # registers "tiny-clip"
    cfg = pretrained._pcfg(hf_hub=f"{REPO}/")
    monkeypatch.setitem(pretrained._PRETRAINED, "tiny-clip", {TAG: cfg})
    hub_file(hub_cache, REPO, WEIGHTS, tiny_weights(0), "a" * 40)
    return cfg


@pytest.fixture
def colour_task(tmp_path, imagefolder_root) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    return write_task(folder, "colours", {"source": "imagefolder", "path": str(imagefolder_root)})


def rerun(model: str, task: Path, tmp_path: Path) -> int:
    """Zero-shot, replacing the record each time (so only the cache decides what is computed)."""
    return main(["-q", "run", "--model", f"m={model}", "--tasks", str(task), "--mode", "zeroshot", "--overwrite",
                 "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", "--device", "cpu"])


def test_open_clip_tag_is_keyed_by_weights_file_preprocessing_and_version(
    tiny_tag, hub_cache, colour_task, tmp_path, monkeypatch
):
    import evalbench.models.openclip as openclip

    counts = Counts(monkeypatch)
    spec = f"tiny-clip@{TAG}"
    record = tmp_path / "results" / "m" / "colours.json"
    assert rerun(spec, colour_task, tmp_path) == 0
    assert counts.take() == (1, 1)
    first = read_record(record)
    assert rerun(spec, colour_task, tmp_path) == 0
    assert counts.take() == (0, 0), "nothing changed: features and classifier come from the cache"

    # New weights pushed to the tag's repository (new commit, new content): both recomputed.
    hub_file(hub_cache, REPO, WEIGHTS, tiny_weights(1), "b" * 40)
    assert rerun(spec, colour_task, tmp_path) == 0
    assert counts.take() == (1, 1)
    second = read_record(record)
    assert second["model"]["fingerprint"] != first["model"]["fingerprint"]
    assert second["results"]["zeroshot"]["per_sample"] != first["results"]["zeroshot"]["per_sample"]

    # The tag's preprocessing config (normalisation) changes: the image features are recomputed.
    monkeypatch.setitem(tiny_tag, "mean", (0.5, 0.5, 0.5))
    assert rerun(spec, colour_task, tmp_path) == 0
    assert counts.take()[0] == 1

    # Another open_clip version: features and text classifier are recomputed.
    monkeypatch.setattr(openclip, "open_clip_version", lambda: "0.0.1")
    assert rerun(spec, colour_task, tmp_path) == 0
    assert counts.take() == (1, 1)
    assert rerun(spec, colour_task, tmp_path) == 0
    assert counts.take() == (0, 0)


def test_tag_fingerprint_follows_file_content_not_commit(tiny_tag, hub_cache):
    """The tag's weights are keyed by the file's content (its etag, the blob name): a commit that
    leaves the weights file as it was keeps the key; a hub answer (online) gives the same key as the
    cache it fills."""
    spec = parse_model_spec(f"tiny-clip@{TAG}")
    before = model_fingerprint(spec)
    hub_file(hub_cache, REPO, WEIGHTS, tiny_weights(0), "c" * 40)  # e.g. a README edit
    assert model_fingerprint(spec) == before
    hub_file(hub_cache, REPO, WEIGHTS, tiny_weights(2), "d" * 40)
    assert model_fingerprint(spec) != before


def test_uncached_tag_offline_is_an_error_before_anything_runs(tiny_arch, hub_cache, monkeypatch):
    import open_clip
    import open_clip.pretrained as pretrained

    from evalbench.errors import EvalbenchError

    open_clip.add_model_config(tiny_arch)
    monkeypatch.setitem(pretrained._PRETRAINED, "tiny-clip", {TAG: pretrained._pcfg(hf_hub=f"{REPO}/")})
    offline = r"weights are not in the local cache and the hub cannot be reached \(offline\)"
    with pytest.raises(EvalbenchError, match=offline):
        model_fingerprint(parse_model_spec(f"tiny-clip@{TAG}"))


def test_hub_resolution_online_asks_the_hub(tiny_tag, hub_cache, monkeypatch):
    """Online, the weights are resolved by the hub's answer (a HEAD request), so that what a
    download would now fetch is what the key names; the same content gives the same key whether
    it came from the hub's answer or from the cache."""
    spec = parse_model_spec(f"tiny-clip@{TAG}")
    cached = model_fingerprint(spec)
    blob = hashlib.sha256(tiny_weights(0)).hexdigest()
    hub = FakeHub({(REPO, WEIGHTS): ("a" * 40, blob)})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", hub)
    assert model_fingerprint(spec) == cached and hub.asked
    hub.files[(REPO, WEIGHTS)] = ("e" * 40, "f" * 64)  # pushed, not yet downloaded
    assert model_fingerprint(spec) != cached


def test_config_preprocessing_and_version_are_in_the_keys_of_local_weights(tiny_arch, tmp_path, monkeypatch):
    """``ARCH.json@weights``: the config JSON's preprocess_cfg is part of the fingerprint, and
    open_clip's version part of the cache keys (read without importing open_clip)."""
    import json

    import open_clip

    import evalbench.models.openclip as openclip

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(tiny_weights(0))
    config = json.loads(Path(tiny_arch).read_text())
    squash = tmp_path / "tiny-clip-squash.json"
    squash.write_text(json.dumps({**config, "preprocess_cfg": {"resize_mode": "squash"}}))
    plain = LazyModel(parse_model_spec(f"{tiny_arch}@{weights}"), CPU)
    other = LazyModel(parse_model_spec(f"{squash}@{weights}"), CPU)
    assert plain.fingerprint != other.fingerprint
    rows = np.arange(5)
    key = runners.feature_key(plain, "data", "test", rows, "fp32")
    assert runners.feature_key(LazyModel(plain.spec, CPU), "data", "test", rows, "fp32") == key
    monkeypatch.setattr(openclip, "open_clip_version", lambda: "0.0.1")
    upgraded = LazyModel(plain.spec, CPU)
    assert upgraded.fingerprint == plain.fingerprint, "the weights did not change"
    assert runners.feature_key(upgraded, "data", "test", rows, "fp32") != key
    classes, templates = ["red", "green"], ["a {c}."]
    assert (runners.classifier_key(upgraded, classes, templates, "fp32")
            != runners.classifier_key(plain, classes, templates, "fp32"))
    assert open_clip.__version__ in plain.code_version


def test_precision_is_part_of_the_feature_key(tiny_arch, imagefolder_root, tmp_path):
    """Two runs differing only in --precision use different cache entries. On CPU ``amp`` falls
    back to fp32 in ``evaluate`` (with a warning), so the runner is called directly here."""
    from evalbench.config import RunConfig
    from evalbench.data import load_task_data
    from evalbench.tasks.loader import TaskRegistry

    folder = tmp_path / "tasks"
    folder.mkdir()
    write_task(folder, "colours", {"source": "imagefolder", "path": str(imagefolder_root)})
    task = TaskRegistry([folder]).get("colours")
    model = LazyModel(parse_model_spec(f"{tiny_arch}"), CPU)
    rows = np.arange(12)
    assert runners.feature_key(model, "d", "test", rows, "fp32") != runners.feature_key(model, "d", "test", rows, "amp")
    data = load_task_data(task, ["test"], tmp_path / "cache")
    for precision in ("fp32", "amp", "fp32"):
        config = RunConfig(cache_dir=tmp_path / "cache", precision=precision, progress=False)
        runners._features(model, data, config, task)
    entries = sorted((tmp_path / "cache" / "features").glob("*/manifest.json"))
    assert len(entries) == 2, "one entry per precision; the second fp32 run reused the first"
