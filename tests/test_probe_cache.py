"""Probe results are cached by the exact features and settings, so a rerun skips the C sweep."""

from __future__ import annotations

import pytest

from evalbench.cache import list_entries
from evalbench.cli import main
from evalbench.probe import SklearnBackend
from evalbench.records import read_record


@pytest.fixture
def fits(monkeypatch) -> list[float]:
    """The C of every scikit-learn fit made from here on."""
    calls: list[float] = []
    original = SklearnBackend.fit

    def counted(self, x, y, c, init=None):
        calls.append(c)
        return original(self, x, y, c, init)

    monkeypatch.setattr(SklearnBackend, "fit", counted)
    return calls


def _run(tmp_path, tiny_arch, task_dir, *extra: str) -> dict:
    args = ["run", "--no-progress", "--model", f"tiny={tiny_arch}", "--tasks", "colours-folder", "--tasks-dir",
            str(task_dir), "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
            "--mode", "linear_probe", *extra]
    assert main(args) == 0
    return read_record(tmp_path / "results" / "tiny" / "colours-folder.json")["results"]["linear_probe"]


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("duration_s", "from_cache")}


def test_rerun_on_cached_features_reuses_the_probe_result(tmp_path, tiny_arch, task_dir, fits):
    first = _run(tmp_path, tiny_arch, task_dir)
    assert fits and "from_cache" not in first
    swept = len(fits)

    again = _run(tmp_path, tiny_arch, task_dir, "--overwrite")
    assert len(fits) == swept, "no fit on unchanged features and settings"
    assert again["from_cache"] is True
    assert _numbers(again) == _numbers(first)
    entries = list_entries(tmp_path / "cache")
    assert [row["kind"] for row in entries].count("probe") == 1
    order = [(row["model"], row["task"], row["kind"], row["split"]) for row in entries]
    assert order == sorted(order), "cache list reads by model, then task"


def test_changed_setting_or_no_cache_fits_again(tmp_path, tiny_arch, task_dir, fits):
    first = _run(tmp_path, tiny_arch, task_dir)
    swept = len(fits)

    normalized = _run(tmp_path, tiny_arch, task_dir, "--overwrite", "--probe-normalize")
    assert len(fits) == 2 * swept and "from_cache" not in normalized
    assert normalized["normalize"] is True

    uncached = _run(tmp_path, tiny_arch, task_dir, "--overwrite", "--no-cache")
    assert len(fits) == 3 * swept and "from_cache" not in uncached
    assert _numbers(uncached) == _numbers(first)
