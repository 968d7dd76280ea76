"""Hub webdatasets: the data fingerprint (part of every feature-cache key) follows the commit that
was downloaded, not the branch name a task pins, such as ``main``."""

from __future__ import annotations

import shutil

import huggingface_hub

from evalbench.data import load_task_data
from evalbench.tasks.loader import TaskRegistry

from conftest import write_task


def _task_on_main(tmp_path, name: str, dataset: dict):
    """A task file for ``dataset`` at ``revision: main``, loaded through the registry."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, name, {**dataset, "revision": "main"})
    return TaskRegistry([tasks]).get(name)


def test_fingerprint_follows_the_downloaded_commit(tmp_path, webdataset_root, monkeypatch):
    repo = tmp_path / "hub" / "datasets--org--colours" / "snapshots"
    for sha in ("a" * 40, "b" * 40):
        shutil.copytree(webdataset_root, repo / sha)
    served, calls = {"sha": "a" * 40}, []

    def fake_snapshot_download(repo_id, repo_type, revision, allow_patterns):
        calls.append((repo_id, repo_type, revision))
        return str(repo / served["sha"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    task = _task_on_main(tmp_path, "hub-colours", {"source": "webdataset", "path": "hf://datasets/org/colours"})

    first = load_task_data(task, ["test"], tmp_path / "cache")
    again = load_task_data(task, ["test"], tmp_path / "cache")
    served["sha"] = "b" * 40  # someone pushed to main
    moved = load_task_data(task, ["test"], tmp_path / "cache")

    assert calls[0] == ("org/colours", "dataset", "main")
    assert first.fingerprint == again.fingerprint
    assert moved.fingerprint != first.fingerprint
    assert len(moved.views["test"].indices) == len(first.views["test"].indices)


def test_hf_hub_fingerprint_follows_the_resolved_data(tmp_path, hf_root, monkeypatch):
    """datasets keeps hub data under <name>/<config id>/<version>/<hash>/<name>-<split>.arrow; the
    fingerprint follows that folder (new data, new folder) and not the set of splits loaded."""
    import datasets

    served, calls = {"hash": "a" * 40}, []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, split, revision))
        folder = tmp_path / "hf-cache" / "org___colours" / "default" / "0.0.0" / served["hash"]
        arrow = folder / f"colours-{split}.arrow"
        if not arrow.exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(next((hf_root / split).glob("*.arrow")), arrow)
        return datasets.Dataset.from_file(str(arrow))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = _task_on_main(tmp_path, "hub-hf", {"source": "hf", "path": "org/colours"})

    first = load_task_data(task, ["test"], tmp_path / "cache")
    with_probe_splits = load_task_data(task, ["train", "val", "test"], tmp_path / "cache")
    served["hash"] = "b" * 40  # someone pushed to main
    moved = load_task_data(task, ["test"], tmp_path / "cache")

    assert calls[0] == ("org/colours", "test", "main")
    assert first.fingerprint == with_probe_splits.fingerprint, "one key for the test split in every mode"
    assert moved.fingerprint != first.fingerprint
    assert len(moved.views["test"].indices) == len(first.views["test"].indices)
