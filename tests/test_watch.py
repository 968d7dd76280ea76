"""`evalbench watch`: checkpoints that appear in a folder are evaluated once, only after their
size and mtime held still over two polls; restarts evaluate nothing again; a failing load is
retried once, then reported. Time is simulated: ``sleep`` advances a clock and plays what the
"training run" writes between polls, so no test waits on real intervals (except the CLI one)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import evalbench.models
from evalbench.cli import main
from evalbench.config import make_config
from evalbench.models import ASSETS
from evalbench.records import load_record
from evalbench.tasks.loader import TaskRegistry
from evalbench.watch import is_candidate, watch_folder

DEMO_ARCH = str(ASSETS / "demo-clip.json")
EARLY, FINAL = ASSETS / "demo-early.safetensors", ASSETS / "demo-final.safetensors"
INTERVAL = 10.0


class Timeline:
    """A fake clock; ``sleep`` advances it and runs the action scheduled after that poll."""

    def __init__(self, actions: dict[int, callable] | None = None):
        self.now, self.sleeps, self.actions = 0.0, 0, actions or {}

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        if self.sleeps in self.actions:
            self.actions[self.sleeps]()


class Loads:
    """Every model load: (model name, sleeps before it, i.e. at poll sleeps + 1), optionally failing
    the first ones."""

    def __init__(self, monkeypatch, timeline: Timeline, fail_first: int = 0):
        self.calls, self.fail_first = [], fail_first
        real = evalbench.models.load_model

        def counted(spec, *args, **kwargs):
            self.calls.append((spec.name, timeline.sleeps))
            if len(self.calls) <= self.fail_first:
                raise RuntimeError("simulated: file not quite there yet")
            return real(spec, *args, **kwargs)

        monkeypatch.setattr(evalbench.models, "load_model", counted)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("watch-cache")


def config(root: Path, cache: Path):
    return make_config(modes="zeroshot", limit=40, results_dir=root / "results", cache_dir=cache, progress=False)


def watch(folder: Path, root: Path, cache: Path, timeline: Timeline, **options):
    return watch_folder(folder, DEMO_ARCH, ["digits"], config(root, cache), TaskRegistry(), interval=INTERVAL,
                        until_idle=3 * INTERVAL, sleep=timeline.sleep, clock=timeline.clock, **options)


@pytest.fixture(scope="module")
def first_watch(tmp_path_factory, cache):
    """epoch_1 is there at the start (with a temporary and a hidden file beside it); epoch_2 is
    written in three parts, one between each of polls 1-2, 2-3 and 3-4."""
    root = tmp_path_factory.mktemp("watch")
    folder = root / "exp1" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(EARLY, folder / "epoch_1.safetensors")
    (folder / "epoch_3.safetensors.tmp").write_bytes(b"half a file")
    (folder / ".epoch_4.safetensors").write_bytes(b"hidden")
    data = FINAL.read_bytes()
    third = len(data) // 3

    def write(part: int):
        def action():
            with open(folder / "epoch_2.safetensors", "ab") as f:
                f.write(data[part * third: (part + 1) * third if part < 2 else len(data)])
        return action

    timeline = Timeline({1: write(0), 2: write(1), 3: write(2)})
    with pytest.MonkeyPatch.context() as mp:
        loads = Loads(mp, timeline)
        summary = watch(folder, root, cache, timeline, report=root / "report.html")
    return root, folder, summary, loads, timeline


def test_each_checkpoint_is_evaluated_once_when_stable(first_watch):
    root, _, summary, loads, timeline = first_watch
    # epoch_1: seen at poll 1, stable at poll 2. epoch_2: complete after sleep 3, so it changed
    # at polls 2, 3 and 4 and held still only at poll 5: never read while being written.
    assert loads.calls == [("epoch_1", 1), ("epoch_2", 4)]
    assert summary.evaluated == ["epoch_1", "epoch_2"] and summary.failed == [] and summary.already == []
    for name, step in (("epoch_1", 1), ("epoch_2", 2)):
        record = load_record(root / "results" / name / "digits.json")
        assert (record.model.step, record.model.run) == (step, "exp1")
    # Polls 6 and 7 saw nothing new; poll 8, 3 intervals after poll 5's evaluation, stopped.
    assert timeline.sleeps == 7


def test_report_is_rewritten_after_each_checkpoint(first_watch):
    root, *_ = first_watch
    page = (root / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") or "<html" in page[:200]
    assert "epoch_1" in page and "epoch_2" in page


def test_restart_evaluates_nothing_again(first_watch, cache, monkeypatch):
    root, folder, *_ = first_watch
    timeline = Timeline()
    loads = Loads(monkeypatch, timeline)
    summary = watch(folder, root, cache, timeline)
    assert loads.calls == [] and summary.evaluated == []
    assert summary.already == ["epoch_1", "epoch_2"]


def test_a_load_that_fails_once_is_retried_at_the_next_poll(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(FINAL, folder / "step_100.safetensors")
    timeline = Timeline()
    loads = Loads(monkeypatch, timeline, fail_first=1)
    # A cache of its own: with the shared one, these weights' features are cached and nothing loads.
    summary = watch(folder, tmp_path, tmp_path / "cache", timeline, name="ft")
    assert loads.calls == [("ft/step_100", 1), ("ft/step_100", 2)]
    assert summary.evaluated == ["ft/step_100"] and summary.failed == []
    record = load_record(tmp_path / "results" / "ft_step_100" / "digits.json")
    assert (record.model.name, record.model.step, record.model.run) == ("ft/step_100", 100, "ft")


def test_cli_watch_reports_a_file_that_fails_twice(tmp_path, cache, capsys):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(EARLY, folder / "epoch_1.safetensors")
    (folder / "epoch_2.safetensors").write_bytes(b"\x00" * 100)  # not a checkpoint, however long one waits
    code = main(["watch", str(folder), "--arch", DEMO_ARCH, "--tasks", "digits", "--mode", "zeroshot", "--limit", "40",
                 "--interval", "0.05", "--until-idle", "0.3", "--no-progress", "--results-dir", str(tmp_path / "results"),
                 "--cache-dir", str(cache)])
    captured = capsys.readouterr()
    assert code == 1
    assert "epoch_2.safetensors failed to load; trying again at the next poll" in captured.err
    summary = captured.err[captured.err.index("1 model(s) failed to load"):]
    assert "epoch_2" in summary and "not a readable checkpoint" in summary
    assert "1 checkpoint(s) evaluated, 0 already evaluated, 1 failed to load" in captured.out
    # The generic folder name 'ckpts' is skipped: the run is the folder above it.
    assert load_record(tmp_path / "results" / "epoch_1" / "digits.json").model.run == tmp_path.name
    assert not (tmp_path / "results" / "epoch_2").exists()


def test_cli_watch_bad_input_is_exit_2(tmp_path, capsys):
    assert main(["watch", str(tmp_path / "missing"), "--arch", DEMO_ARCH, "--tasks", "digits"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--arch", DEMO_ARCH]) == 2
    assert "pass --suite or --tasks" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--arch", DEMO_ARCH, "--tasks", "digits", "--interval", "0"]) == 2
    assert "--interval" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["watch", "--help"])
    assert "example:\n  evalbench watch" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path, cache, monkeypatch, capsys):
    def interrupt():
        raise KeyboardInterrupt

    timeline = Timeline({2: interrupt})
    summary = watch_folder(tmp_path, DEMO_ARCH, ["digits"], config(tmp_path, cache), TaskRegistry(), interval=INTERVAL,
                           sleep=timeline.sleep, clock=timeline.clock)  # no --until-idle: only Ctrl-C stops it
    assert timeline.sleeps == 2 and summary.evaluated == summary.failed == []
    import evalbench.watch

    monkeypatch.setattr(evalbench.watch, "time", SimpleNamespace(sleep=lambda s: interrupt(), monotonic=lambda: 0.0))
    assert main(["watch", str(tmp_path), "--arch", DEMO_ARCH, "--tasks", "digits", "--results-dir",
                 str(tmp_path / "results"), "--cache-dir", str(cache)]) == 0
    assert "0 checkpoint(s) evaluated" in capsys.readouterr().out


@pytest.mark.parametrize("name, default, with_pattern", [
    ("epoch_1.pt", True, True), ("epoch_1.safetensors", True, True), ("epoch_1.pt.tmp", False, False),
    ("epoch_1.part", False, False), (".epoch_1.pt", False, False), ("epoch_1.pt~", False, False),
    ("notes.txt", False, False), ("epoch_1.npz", False, True), ("latest.pt", True, False),
])
def test_candidate_names(name, default, with_pattern):
    assert is_candidate(name, None) is default
    assert is_candidate(name, "epoch_*") is with_pattern


def test_watch_under_torchrun(tmp_path):
    """Two gloo ranks: rank 0 decides (one summary line), both take part in the run."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "ckpts"
    folder.mkdir()
    shutil.copy(EARLY, folder / "epoch_1.safetensors")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "EVALBENCH_SHARD_SIZE": "8", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "evalbench", "watch", str(folder), "--arch", DEMO_ARCH, "--tasks", "digits", "--limit", "40",
           "--mode", "zeroshot", "--interval", "0.2", "--until-idle", "1", "--no-progress", "--batch-size", "8",
           "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("1 checkpoint(s) evaluated") == 1
    record = load_record(tmp_path / "results" / "epoch_1" / "digits.json")
    assert record.provenance["world_size"] == 2 and record.model.step == 1
    assert len(list((tmp_path / "cache").glob("features/*/shard-*.npy"))) >= 2  # 40 images, shards of 8
