"""One data pass for every model of a run that shares preprocessing (issue 16, sweep-pass).

Three demo-architecture checkpoints (the bundled demo-early and demo-final, and seeded random
weights saved to safetensors here), plus one at another image size, on a tiny image folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import transforms

from evalbench import features
from evalbench.cli import main
from evalbench.features import preprocess_key
from evalbench.records import read_record

ASSETS = Path(__file__).resolve().parents[1] / "evalbench" / "assets"
TASK = "colours-folder"


def _random_checkpoint(folder: Path, config: dict, name: str, seed: int) -> str:
    """An ``ARCH.json@weights.safetensors`` spec with seeded random weights for ``config``."""
    import open_clip
    from safetensors.torch import save_file

    arch = folder / f"{name}.json"
    arch.write_text(json.dumps(config))
    open_clip.add_model_config(arch)
    torch.manual_seed(seed)
    model = open_clip.create_model(arch.stem, pretrained=None)
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return f"{arch}@{weights}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """name -> spec: three demo-architecture checkpoints and one at 48 px (other preprocessing)."""
    folder = tmp_path_factory.mktemp("ckpts")
    demo = json.loads((ASSETS / "demo-clip.json").read_text())
    small = json.loads(json.dumps(demo))
    small["vision_cfg"]["image_size"] = 48
    return {
        "early": "demo-early",
        "final": "demo-final",
        "random": _random_checkpoint(folder, demo, "demo-random", seed=3),
        "px48": _random_checkpoint(folder, small, "demo-48px", seed=4),
    }


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts images read and preprocessed (workers=0: in this process)."""
    calls: list[int] = []
    original = features.Preprocessed.__getitem__

    def counted(self, i):
        calls.append(i)
        return original(self, i)

    monkeypatch.setattr(features.Preprocessed, "__getitem__", counted)
    return calls


def _run(tmp: Path, task_dir: Path, specs: list[str], *extra: str) -> int:
    args = ["run", "--tasks", TASK, "--tasks-dir", str(task_dir), "--no-progress", "--batch-size", "5",
            "--results-dir", str(tmp / "results"), "--cache-dir", str(tmp / "cache"), *extra]
    for spec in specs:
        args += ["--model", spec]
    return main(args)


def _metrics(record: dict) -> dict:
    return {m: {k: v for k, v in r.items() if k not in ("duration_s", "from_cache")} for m, r in record["results"].items()}


def _features(cache: Path) -> dict[str, np.ndarray]:
    """Every complete feature entry of a cache folder, by key, as one array."""
    out = {}
    for manifest in (cache / "features").glob("*/manifest.json"):
        meta = json.loads(manifest.read_text())
        assert meta["complete"], manifest
        out[manifest.parent.name] = np.concatenate([np.load(p) for p in sorted(manifest.parent.glob("shard-*.npy"))])
    return out


def test_one_run_equals_separate_runs_and_decodes_each_split_once(tmp_path, task_dir, checkpoints, decodes, capfd):
    names = ["early", "final", "random"]
    specs = [f"{n}={checkpoints[n]}" for n in names]
    assert _run(tmp_path / "one", task_dir, specs[:1]) == 0
    single_decodes = len(decodes)
    assert single_decodes > 0
    decodes.clear()

    capfd.readouterr()
    assert _run(tmp_path / "joint", task_dir, specs) == 0
    # Each split's images were read and preprocessed once for the three models, not three times.
    assert len(decodes) == single_decodes
    assert capfd.readouterr().err.count("one pass for 3 models") == 3  # train, val, test

    for name, spec in zip(names, specs):
        assert _run(tmp_path / f"alone-{name}", task_dir, [spec]) == 0
    joint = _features(tmp_path / "joint" / "cache")
    alone = {}
    for name in names:
        alone.update(_features(tmp_path / f"alone-{name}" / "cache"))
    assert sorted(joint) == sorted(alone) and len(joint) == 3 * 3  # 3 models x train, val, test
    for key in joint:
        np.testing.assert_allclose(joint[key], alone[key], rtol=1e-5, atol=1e-6)
    for name in names:
        a = read_record(tmp_path / "joint" / "results" / name / f"{TASK}.json")
        b = read_record(tmp_path / f"alone-{name}" / "results" / name / f"{TASK}.json")
        assert set(a["results"]) == {"zeroshot", "linear_probe"}
        assert _metrics(a) == _metrics(b)
    # The three models' features differ: each pass encoded with its own weights.
    test_feats = sorted(joint.values(), key=lambda x: x.shape[0])
    assert not np.allclose(test_feats[0], test_feats[1])


def test_other_preprocessing_gets_its_own_pass(tmp_path, task_dir, checkpoints, decodes, capfd):
    specs = [f"final={checkpoints['final']}", f"px48={checkpoints['px48']}", f"early={checkpoints['early']}"]
    assert _run(tmp_path / "one", task_dir, specs[:1], "--mode", "zeroshot") == 0
    single = len(decodes)
    decodes.clear()
    capfd.readouterr()
    assert _run(tmp_path / "joint", task_dir, specs, "--mode", "zeroshot") == 0
    # final and early share one pass; px48 (48 px, not 64) has its own.
    assert len(decodes) == 2 * single
    passes = [line for line in capfd.readouterr().err.splitlines() if "one pass for" in line]
    assert len(passes) == 1 and passes[0].endswith("final, early")
    assert _run(tmp_path / "alone", task_dir, specs[1:2], "--mode", "zeroshot") == 0
    alone = _features(tmp_path / "alone" / "cache")
    joint = _features(tmp_path / "joint" / "cache")
    assert len(alone) == 1 and len(joint) == 3
    key, x = next(iter(alone.items()))
    np.testing.assert_allclose(joint[key], x, rtol=1e-5, atol=1e-6)
    a = read_record(tmp_path / "joint" / "results" / "px48" / f"{TASK}.json")
    b = read_record(tmp_path / "alone" / "results" / "px48" / f"{TASK}.json")
    assert _metrics(a) == _metrics(b)


def test_no_cache_keeps_one_pass_per_model(tmp_path, task_dir, checkpoints, decodes):
    assert _run(tmp_path / "one", task_dir, ["demo-final"], "--mode", "zeroshot", "--no-cache") == 0
    single = len(decodes)
    decodes.clear()
    assert _run(tmp_path / "two", task_dir, ["demo-final", "demo-early"], "--mode", "zeroshot", "--no-cache") == 0
    assert len(decodes) == 2 * single
    assert not (tmp_path / "two" / "cache" / "features").exists()


def test_model_that_fails_to_load_leaves_the_pass_to_the_others(tmp_path, task_dir, checkpoints, capfd):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    specs = ["demo-final", f"broken={ASSETS / 'demo-clip.json'}@{broken}", "demo-early"]
    capfd.readouterr()
    code = _run(tmp_path, task_dir, specs, "--mode", "zeroshot")
    err = capfd.readouterr().err
    assert code != 0  # the broken model fails on its own turn, by name
    assert "broken: not loaded for a shared pass" in err
    assert "one pass for 2 models with the same preprocessing: demo-final, demo-early" in err
    assert (tmp_path / "results" / "demo-final" / f"{TASK}.json").is_file()
    # demo-early's features were made in demo-final's pass (3 splits... zeroshot reads test only).
    cached = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "features").glob("*/manifest.json")]
    assert sorted(m["model"] for m in cached) == ["demo-early", "demo-final"] and all(m["complete"] for m in cached)


def test_resumed_entries_keep_their_shards_and_fill_the_rest(tmp_path, task_dir, checkpoints, monkeypatch):
    """A pass where one model's entry already has some shards: those are not rewritten, the rest
    are, and both entries end complete and equal to a fresh run's."""
    monkeypatch.setenv("EVALBENCH_SHARD_SIZE", "4")
    assert _run(tmp_path / "fresh", task_dir, ["demo-final", "demo-early"], "--mode", "zeroshot") == 0
    fresh = _features(tmp_path / "fresh" / "cache")
    # Copy demo-early's entry without its manifest's completion and without its last shard.
    import shutil

    early = next(p.parent for p in (tmp_path / "fresh" / "cache" / "features").glob("*/manifest.json")
                 if json.loads(p.read_text())["model"] == "demo-early")
    target = tmp_path / "resume" / "cache" / "features" / early.name
    shutil.copytree(early, target)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    shards = sorted(target.glob("shard-*.npy"))
    kept = shards[0].stat().st_mtime_ns
    shards[-1].unlink()
    assert _run(tmp_path / "resume", task_dir, ["demo-final", "demo-early"], "--mode", "zeroshot") == 0
    resumed = _features(tmp_path / "resume" / "cache")
    assert sorted(resumed) == sorted(fresh)
    for key in fresh:
        np.testing.assert_allclose(resumed[key], fresh[key], rtol=1e-5, atol=1e-6)
    assert shards[0].stat().st_mtime_ns == kept


class _Scaled:
    """A transform whose repr hides its settings."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __repr__(self) -> str:
        return "Scaled()"

    def __call__(self, x):
        return (x - self.mean) / self.std


def test_preprocess_key_compares_settings_not_reprs():
    def pipeline(mean, size=64):
        return transforms.Compose([transforms.Resize(size), transforms.ToTensor(),
                                   transforms.Normalize(mean, (0.5, 0.5, 0.5))])

    assert preprocess_key(pipeline((0.1, 0.2, 0.3))) == preprocess_key(pipeline((0.1, 0.2, 0.3)))
    assert preprocess_key(pipeline((0.1, 0.2, 0.3))) != preprocess_key(pipeline((0.1, 0.2, 0.31)))
    assert preprocess_key(pipeline((0.1, 0.2, 0.3))) != preprocess_key(pipeline((0.1, 0.2, 0.3), size=48))
    a, b = _Scaled(0.5, 0.2), _Scaled(0.5, 0.25)
    assert repr(a) == repr(b) and preprocess_key(a) != preprocess_key(b)
    assert preprocess_key(_Scaled(0.5, 0.2)) == preprocess_key(a)
    # Lambdas and closures cannot be compared: such a pipeline shares with nothing.
    assert preprocess_key(transforms.Compose([lambda x: x])) is None


def test_a_pass_holds_models_within_the_memory_budget(tmp_path, task_dir, checkpoints, decodes, monkeypatch, capfd):
    """With room for one and a half demo models' weights, three models make two passes: the
    first model with one peer, then the third on its own turn."""
    from evalbench import cohort
    from evalbench.models import LazyModel, parse_model_spec

    one = cohort.weights_bytes(LazyModel(parse_model_spec("demo-final"), torch.device("cpu")).get())
    assert one > 0
    monkeypatch.setattr(cohort, "pass_memory_budget", lambda device=None: int(one * 1.5))
    assert _run(tmp_path / "one", task_dir, ["demo-final"], "--mode", "zeroshot") == 0
    single = len(decodes)
    decodes.clear()
    capfd.readouterr()
    specs = ["demo-final", "demo-early", f"random={checkpoints['random']}"]
    assert _run(tmp_path / "three", task_dir, specs, "--mode", "zeroshot") == 0
    assert len(decodes) == 2 * single
    err = capfd.readouterr().err
    assert "one pass for 2 models with the same preprocessing: demo-final, demo-early" in err
    assert "later models get their own pass" in err
