"""Reliability: bad images, concurrent runs, crash-safe resume, determinism."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evalbench.cli import main
from evalbench.records import read_record

from conftest import write_task

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> int:
    return main(["run", "--no-progress", *args])


def _metrics(record: dict) -> dict:
    """The record's results without durations: what must be identical between equal runs."""
    return {
        mode: {k: v for k, v in result.items() if k != "duration_s"}
        for mode, result in record["results"].items()
    }


@pytest.fixture
def broken_folder(tmp_path, imagefolder_root) -> Path:
    """A copy of the colour images with one truncated PNG in the test split."""
    root = tmp_path / "broken"
    shutil.copytree(imagefolder_root, root)
    victim = sorted((root / "test" / "green").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    return root


def test_bad_image_is_named_and_stops_the_run(tmp_path, tiny_arch, broken_folder, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, "broken", {"source": "imagefolder", "path": str(broken_folder)})
    rc = run_cli("--model", f"tiny={tiny_arch}", "--tasks", "broken", "--tasks-dir", str(tasks),
                 "--results-dir", str(tmp_path / "r"), "--no-cache", "--mode", "zeroshot")
    err = capsys.readouterr().err
    assert rc == 2
    assert "test/green/test-" in err and "--on-bad-image skip" in err
    assert "Traceback" not in err
    assert not list((tmp_path / "r").rglob("*.json"))


def test_skipped_bad_image_is_counted(tmp_path, tiny_arch, broken_folder):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, "broken", {"source": "imagefolder", "path": str(broken_folder)})
    rc = run_cli("--model", f"tiny={tiny_arch}", "--tasks", "broken", "--tasks-dir", str(tasks),
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"),
                 "--on-bad-image", "skip")
    assert rc == 0
    results = read_record(tmp_path / "r" / "tiny" / "broken.json")["results"]
    assert results["zeroshot"]["n"] == 11  # 12 test images, one undecodable
    assert results["zeroshot"]["skipped_images"] == {"test": 1}
    assert results["linear_probe"]["n"] == 11


def test_same_inputs_give_identical_metrics(tmp_path, tiny_arch, task_dir):
    for run in ("a", "b"):
        assert run_cli("--model", f"tiny={tiny_arch}", "--tasks", "colours-wds", "--tasks-dir", str(task_dir),
                       "--results-dir", str(tmp_path / run), "--no-cache") == 0
    a, b = (read_record(tmp_path / run / "tiny" / "colours-wds.json") for run in ("a", "b"))
    assert json.dumps(_metrics(a), sort_keys=True) == json.dumps(_metrics(b), sort_keys=True)
    assert a["model"] == b["model"] and a["task"] == b["task"]


def _subprocess(args: list[str], env_extra: dict | None = None, slow: float = 0.0) -> subprocess.Popen:
    """``evalbench run`` in a child process; ``slow`` seconds of sleep per image make it killable
    mid-extraction (the patch is in the child's driver script, not in evalbench)."""
    driver = textwrap.dedent(f"""
        import sys, time
        import evalbench.features as features
        original = features.Preprocessed.__getitem__
        def slow(self, i):
            time.sleep({slow})
            return original(self, i)
        features.Preprocessed.__getitem__ = slow
        from evalbench.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", driver, "run", "--no-progress", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_run_resumes_from_finished_shards(tmp_path, tiny_arch, task_dir, monkeypatch):
    cache, results = tmp_path / "cache", tmp_path / "results"
    args = ["--model", f"tiny={tiny_arch}", "--tasks", "colours-folder", "--tasks-dir", str(task_dir),
            "--results-dir", str(results), "--cache-dir", str(cache), "--batch-size", "2", "--mode", "zeroshot"]
    child = _subprocess(args, {"EVALBENCH_SHARD_SIZE": "4"}, slow=0.3)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("features/*/shard-*.npy"))) < 1:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    shards = list(cache.glob("features/*/shard-*.npy"))
    assert 1 <= len(shards) < 3, "killed after the first shard and before the last (12 images, shards of 4)"
    manifest = json.loads(next(cache.glob("features/*/manifest.json")).read_text())
    assert manifest["complete"] is False
    assert not (results / "tiny" / "colours-folder.json").exists()

    encoded = []
    import evalbench.features as features

    original = features.Preprocessed.__getitem__
    monkeypatch.setattr(features.Preprocessed, "__getitem__", lambda self, i: encoded.append(i) or original(self, i))
    monkeypatch.setenv("EVALBENCH_SHARD_SIZE", "4")
    assert main(["run", "--no-progress", *args]) == 0
    assert len(encoded) == 12 - 4 * len(shards), "only the unfinished shards are recomputed"
    resumed = read_record(results / "tiny" / "colours-folder.json")

    assert run_cli("--model", f"tiny={tiny_arch}", "--tasks", "colours-folder", "--tasks-dir", str(task_dir),
                   "--results-dir", str(tmp_path / "fresh"), "--no-cache", "--mode", "zeroshot") == 0
    fresh = read_record(tmp_path / "fresh" / "tiny" / "colours-folder.json")
    assert _metrics(resumed) == _metrics(fresh)


def test_two_processes_share_results_and_cache(tmp_path, tiny_arch, task_dir):
    cache, results = tmp_path / "cache", tmp_path / "results"
    common = ["--tasks", "colours-folder,colours-wds", "--tasks-dir", str(task_dir), "--results-dir", str(results),
              "--cache-dir", str(cache)]
    children = [
        _subprocess(["--model", f"tiny={tiny_arch}", *common], slow=0.01),  # same model and tasks twice
        _subprocess(["--model", f"tiny={tiny_arch}", *common], slow=0.01),
        _subprocess(["--model", f"other={tiny_arch}", "--mode", "zeroshot", *common], slow=0.01),
    ]
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
    for model, modes in (("tiny", {"zeroshot", "linear_probe"}), ("other", {"zeroshot"})):
        for task in ("colours-folder", "colours-wds"):
            record = read_record(results / model / f"{task}.json")
            assert set(record["results"]) == modes
    assert not list(results.rglob("*.tmp")) and not list(cache.rglob("*.tmp"))
    a = read_record(results / "tiny" / "colours-folder.json")["results"]["zeroshot"]
    b = read_record(results / "other" / "colours-folder.json")["results"]["zeroshot"]
    assert a["acc1"] == b["acc1"]  # same weights, same cache entries
    manifests = [json.loads(p.read_text()) for p in cache.glob("features/*/manifest.json")]
    assert manifests and all(m["complete"] for m in manifests)


def test_feature_views_share_memory_and_nan_rows_are_found_in_chunks():
    import numpy as np

    from evalbench.runners import _nan_free_rows, _rows_of

    feats = np.arange(20, dtype=np.float32).reshape(5, 4)
    rows = np.array([2, 5, 7, 8, 9])
    assert np.shares_memory(_rows_of(feats, rows, rows), feats), "a view of every row in order is not a copy"
    np.testing.assert_array_equal(_rows_of(feats, rows, np.array([5, 8])), feats[[1, 3]])

    assert _nan_free_rows(feats, chunk=2) is None
    feats[3, 1] = np.nan
    np.testing.assert_array_equal(_nan_free_rows(feats, chunk=2), [True, True, True, False, True])
