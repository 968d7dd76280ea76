"""Hub webdatasets: the data fingerprint (part of every feature-cache key) follows the commit that
was downloaded, not the branch name a task pins, such as ``main``."""

from __future__ import annotations

import json
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


def test_loading_script_dataset_is_one_line_naming_the_path(tmp_path, tiny_arch, capsys):
    """datasets >= 4 refuses loading-script datasets (WinoGAViL's hub copy at DataComp's time was
    one) with a bare RuntimeError; evalbench says so in one line naming dataset.path, exit 2."""
    from evalbench.cli import main

    data = tmp_path / "tasks" / "winogavil"
    data.mkdir(parents=True)
    (data / "winogavil.py").write_text("import datasets  # a loading script\n")
    task = tmp_path / "tasks" / "wino.yaml"
    task.write_text(
        "name: wino\nversion: 1\ndescription: association\ntype: association\n"
        "dataset: {source: hf, path: winogavil, revision: abc, image_column: candidate_images, cue_column: cue,\n"
        "          candidates_column: candidates, answers_column: associations}\n"
        "splits: {test: test}\n"
    )
    capsys.readouterr()
    rc = main(["run", "--no-progress", "--model", f"tiny={tiny_arch}", "--tasks", str(task), "--mode", "zeroshot",
               "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("evalbench: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "dataset.path: winogavil at revision abc is a loading-script dataset (winogavil.py)" in lines[0]
    assert "datasets<4" in lines[0]
    assert not (tmp_path / "results" / "tiny" / "wino.json").exists()


def test_hub_id_found_as_a_folder_beside_the_task_is_read_locally(tmp_path, tiny_arch, capsys):
    """The route winogavil.yaml gives for a loading-script hub copy: a save_to_disk copy at
    <task folder>/nlphuji/winogavil is read instead of the hub, under the task's own name."""
    import datasets
    from PIL import Image

    from evalbench.cli import main

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]
    rows = {"cue": ["apple", "sea"], "candidates": [[f"q{q}-{j}" for j in range(5)] for q in range(2)],
            "candidate_images": [[Image.new("RGB", (32, 32), c) for c in colours] for _ in range(2)],
            "associations": [["q0-0", "q0-3"], ["q1-2"]]}
    features = datasets.Features({"cue": datasets.Value("string"), "candidates": datasets.List(datasets.Value("string")),
                                  "candidate_images": datasets.List(datasets.Image()),
                                  "associations": datasets.List(datasets.Value("string"))})
    tasks = tmp_path / "tasks"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tasks / "nlphuji" / "winogavil"))
    (tasks / "wino.yaml").write_text(
        "name: wino\nversion: 1\ndescription: association\ntype: association\n"
        "dataset: {source: hf, path: nlphuji/winogavil, revision: abc, image_column: candidate_images,\n"
        "          cue_column: cue, candidates_column: candidates, answers_column: associations}\n"
        "splits: {test: test}\nmain_metric: avg_jaccard_score\n"
    )
    capsys.readouterr()
    rc = main(["run", "--no-progress", "--model", f"tiny={tiny_arch}", "--tasks", "wino", "--tasks-dir", str(tasks),
               "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "results" / "tiny" / "wino.json").read_text())
    assert record["results"]["retrieval"]["n"] == 2 and record["results"]["retrieval"]["n_images"] == 10
