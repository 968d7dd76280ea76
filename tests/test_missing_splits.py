"""A split that a task names but its source lacks: every source says which splits it has, and a
run writes every mode that can run, names the ones that cannot, and exits 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalbench.api import RunConfig, run
from evalbench.cli import main
from evalbench.data import load_task_data
from evalbench.errors import EvalbenchError, MissingSplitError
from evalbench.records import read_record
from evalbench.tasks.loader import TaskRegistry

from conftest import write_task


def run_cli(*args: str) -> int:
    return main(["run", "--no-progress", *args])


@pytest.fixture
def no_train_folder(tmp_path, imagefolder_root) -> Path:
    """The colour images with val and test split folders only, as a mirror without train."""
    root = tmp_path / "no-train"
    for split in ("val", "test"):
        shutil.copytree(imagefolder_root / split, root / split)
    return root


def _tasks(tmp_path: Path, **tasks: dict) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir(exist_ok=True)
    for name, fields in tasks.items():
        write_task(folder, name, **fields)
    return folder


def test_missing_train_runs_zeroshot_skips_the_probe_and_exits_1(tmp_path, tiny_arch, no_train_folder, capsys):
    tasks = _tasks(tmp_path, **{"no-train": {"dataset": {"source": "imagefolder", "path": str(no_train_folder)}}})
    rc = run_cli("--model", f"tiny={tiny_arch}", "--tasks", "no-train", "--tasks-dir", str(tasks),
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"))
    err = capsys.readouterr().err
    assert rc == 1
    results = read_record(tmp_path / "r" / "tiny" / "no-train.json")["results"]
    assert "zeroshot" in results and results["zeroshot"]["n"] == 12
    assert "linear_probe" not in results
    skip_lines = [line for line in err.splitlines() if "not run" in line]
    # one log line when it happens, one in the summary at the end
    assert len(skip_lines) == 2, err
    for line in skip_lines:
        assert "no-train" in line and "linear_probe" in line
        assert "'train'" in line and "(the source has: test, val)" in line
    assert "Traceback" not in err


def test_missing_test_writes_nothing_for_that_task_and_other_tasks_still_run(
    tmp_path, tiny_arch, imagefolder_root, capsys
):
    tasks = _tasks(
        tmp_path,
        **{
            "no-test": {"dataset": {"source": "imagefolder", "path": str(imagefolder_root)},
                        "splits": {"train": "train", "val": "val", "test": "testing"}},
            "fine": {"dataset": {"source": "imagefolder", "path": str(imagefolder_root)}},
        },
    )
    rc = run_cli("--model", f"tiny={tiny_arch}", "--tasks", "no-test,fine", "--tasks-dir", str(tasks),
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"))
    captured = capsys.readouterr()
    assert rc == 1
    assert not (tmp_path / "r" / "tiny" / "no-test.json").exists()
    assert set(read_record(tmp_path / "r" / "tiny" / "fine.json")["results"]) == {"zeroshot", "linear_probe"}
    summary = captured.err[captured.err.index("2 result(s) skipped"):]
    for mode in ("zeroshot", "linear_probe"):
        assert f"tiny / no-test / {mode} not run: no split 'testing'" in summary
    assert "(the source has: test, train, val)" in summary
    assert "fine" in captured.out and "no-test" not in captured.out  # the table shows what ran


def test_missing_named_val_skips_few_shot_probes(tmp_path, tiny_arch, imagefolder_root, capsys):
    tasks = _tasks(tmp_path, **{"no-valid": {"dataset": {"source": "imagefolder", "path": str(imagefolder_root)},
                                             "splits": {"train": "train", "val": "valid", "test": "test"}}})
    rc = run_cli("--model", f"tiny={tiny_arch}", "--tasks", "no-valid", "--tasks-dir", str(tasks),
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--shots", "1,2",
                 "--seeds", "1")
    err = capsys.readouterr().err
    assert rc == 1
    assert set(read_record(tmp_path / "r" / "tiny" / "no-valid.json")["results"]) == {"zeroshot"}
    for mode in ("linear_probe@1", "linear_probe@2"):
        assert f"no-valid / {mode} not run: no split 'valid'" in err


def test_a_rerun_keeps_what_was_written_and_still_reports_the_skip(tmp_path, tiny_arch, no_train_folder, capsys):
    tasks = _tasks(tmp_path, **{"no-train": {"dataset": {"source": "imagefolder", "path": str(no_train_folder)}}})
    args = ("--model", f"tiny={tiny_arch}", "--tasks", "no-train", "--tasks-dir", str(tasks),
            "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"))
    assert run_cli(*args) == 1
    first = read_record(tmp_path / "r" / "tiny" / "no-train.json")
    capsys.readouterr()
    assert run_cli(*args) == 1
    assert "no-train / linear_probe not run" in capsys.readouterr().err
    assert read_record(tmp_path / "r" / "tiny" / "no-train.json") == first


def test_evaluate_returns_the_skips(tmp_path, tiny_arch, no_train_folder):
    tasks = _tasks(tmp_path, **{"no-train": {"dataset": {"source": "imagefolder", "path": str(no_train_folder)},
                                             "splits": {"train": "train", "val": {"fraction": 0.2}, "test": "test"}}})
    config = RunConfig(results_dir=tmp_path / "r", cache_dir=tmp_path / "c", progress=False)
    paths = run([f"tiny={tiny_arch}"], ["no-train"], config, TaskRegistry([tasks]))
    assert paths == [tmp_path / "r" / "tiny" / "no-train.json"]
    [skip] = paths.skipped
    assert (skip.model, skip.task, skip.mode, skip.split) == ("tiny", "no-train", "linear_probe", "train")
    assert skip.available == ("test", "val")
    assert skip.where == str(no_train_folder.resolve())


def test_missing_retrieval_test_split_is_a_skip(tmp_path, tiny_arch, imagefolder_root):
    folder = tmp_path / "captions"
    (folder / "img").mkdir(parents=True)
    shutil.copy(next((imagefolder_root / "test" / "red").glob("*.png")), folder / "img" / "0.png")
    (folder / "captions-val.jsonl").write_text(json.dumps({"image": "img/0.png", "captions": ["red"]}) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ret.yaml").write_text(
        "name: ret\nversion: 1\ndescription: d\ntype: retrieval\n"
        f"dataset: {{source: captionfolder, path: {folder}, file: 'captions-{{split}}.jsonl'}}\n"
        "splits: {test: test}\n"
    )
    config = RunConfig(results_dir=tmp_path / "r", cache_dir=tmp_path / "c", progress=False)
    result = run([f"tiny={tiny_arch}"], ["ret"], config, TaskRegistry([tasks]))
    assert list(result) == []
    assert [(s.mode, s.split, s.available) for s in result.skipped] == [("retrieval", "test", ("val",))]


# --- every source names the splits it has ------------------------------------------------------


def _load_missing(tmp_path, dataset: dict, split: str = "valid") -> MissingSplitError:
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    write_task(tasks, "t", dataset, splits={"train": "train", "val": split, "test": "test"})
    task = TaskRegistry([tasks]).get("t")
    with pytest.raises(MissingSplitError) as info:
        load_task_data(task, ["train", "val", "test"], tmp_path / "cache")
    e = info.value
    assert isinstance(e, EvalbenchError)  # the CLI's one error type, where a skip is not possible
    assert e.task == "t" and e.split == split
    assert str(e).startswith(f"{task.path}: splits: no split '{split}'")
    return e


def test_imagefolder_lists_its_split_folders(tmp_path, imagefolder_root):
    e = _load_missing(tmp_path, {"source": "imagefolder", "path": str(imagefolder_root)})
    assert e.available == ["test", "train", "val"]


def test_local_webdataset_lists_its_split_folders(tmp_path, webdataset_root):
    e = _load_missing(tmp_path, {"source": "webdataset", "path": str(webdataset_root)})
    assert e.available == ["test", "train", "val"]


def test_hub_webdataset_lists_the_splits_of_the_repository(tmp_path, webdataset_root, monkeypatch):
    """Only the *.txt files and the asked split are downloaded; *.txt includes every
    SPLIT/nshards.txt, so the snapshot shows every split the repository has."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    repo_files = [str(p.relative_to(webdataset_root)) for p in webdataset_root.rglob("*") if p.is_file()]
    repo_files = [f for f in repo_files if not f.startswith("val/")]  # the mirror has no val split
    snapshot = tmp_path / "hub" / "snapshots" / ("c" * 40)

    def fake_snapshot_download(repo_id, repo_type, revision, allow_patterns):
        for name in filter_repo_objects(repo_files, allow_patterns=allow_patterns):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(webdataset_root / name, snapshot / name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    e = _load_missing(tmp_path, {"source": "webdataset", "path": "hf://datasets/org/colours"}, split="val")
    assert e.available == ["test", "train"]
    assert e.where == "hf://datasets/org/colours"


def test_hf_saved_dataset_dict_lists_its_splits(tmp_path, hf_root):
    e = _load_missing(tmp_path, {"source": "hf", "path": str(hf_root)})
    assert e.available == ["test", "train", "val"]


def test_hf_load_dataset_lists_the_dataset_splits(tmp_path, hf_root):
    """A folder that ``load_dataset`` reads (parquet files named by split), as a hub dataset is."""
    import datasets

    folder = tmp_path / "parquet" / "data"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        datasets.load_from_disk(str(hf_root / split)).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    e = _load_missing(tmp_path, {"source": "hf", "path": str(folder.parent)})
    assert e.available == ["test", "train"]


def test_generated_source_lists_its_sizes(tmp_path):
    dataset = {"source": "generated", "generator": "sklearn-digits", "sizes": {"train": 30, "test": 20}}
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, "t", dataset, splits={"train": "train", "val": "val", "test": "test"}, classnames=None)
    with pytest.raises(MissingSplitError) as info:
        load_task_data(TaskRegistry([tasks]).get("t"), ["train", "val", "test"], tmp_path / "cache")
    assert (info.value.split, info.value.available) == ("val", ["test", "train"])


def test_allow_missing_loads_the_other_roles(tmp_path, no_train_folder):
    """A val fraction reads train, so a missing train takes val with it; test still loads."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, "t", {"source": "imagefolder", "path": str(no_train_folder)},
               splits={"train": "train", "val": {"fraction": 0.2}, "test": "test"})
    data = load_task_data(TaskRegistry([tasks]).get("t"), ["train", "val", "test"], tmp_path / "c",
                          allow_missing=True)
    assert set(data.views) == {"test"} and set(data.sources) == {"test"}
    assert set(data.missing) == {"train", "val"}
    assert {e.split for e in data.missing.values()} == {"train"}


# --- the built-in tasks name only splits their mirrors have ---------------------------------------

# The splits of each hub mirror, as its hub listing shows them (dataset viewer and file tree).
# DataComp's *_test mirrors hold a test split only (download_evalsets.py fetches test/ alone).
MIRROR_SPLITS = {
    "clip-benchmark/wds_sun397": {"test"},
    "clip-benchmark/wds_country211": {"train", "test"},
    "clip-benchmark/wds_renderedsst2": {"train", "test"},
    "clip-benchmark/wds_vtab-pets": {"train", "test"},
    "clip-benchmark/wds_vtab-caltech101": {"train", "test"},
    "clip-benchmark/wds_vtab-cifar100": {"train", "test"},
    "clip-benchmark/wds_vtab-pcam": {"train", "test"},
    "clip-benchmark/wds_vtab-eurosat": {"train", "test"},
    "clip-benchmark/wds_vtab-resisc45": {"train", "test"},
    "clip-benchmark/wds_vtab-clevr_count_all": {"train", "test"},
    "clip-benchmark/wds_fgvc_aircraft": {"train", "test"},
    "clip-benchmark/wds_cars": {"train", "test"},
    "clip-benchmark/wds_food101": {"train", "test"},
    "clip-benchmark/wds_mnist": {"train", "test"},
    "clip-benchmark/wds_imagenet1k": {"train", "test"},
    "clip-benchmark/wds_flickr30k": {"train", "test"},
}


def _builtin_tasks_on_listed_mirrors():
    registry = TaskRegistry()
    for name in registry.names():
        task = registry.get(name)
        repo = str(task.spec.dataset.get("path", "")).removeprefix("hf://datasets/")
        if repo in MIRROR_SPLITS or repo.startswith("djghosh/") and repo.endswith("_test"):
            yield pytest.param(task, MIRROR_SPLITS.get(repo, {"test"}), id=name)


@pytest.mark.parametrize("task, listed", list(_builtin_tasks_on_listed_mirrors()))
def test_builtin_tasks_name_only_splits_their_mirror_has(task, listed):
    splits = task.spec.splits
    named = {s for s in (splits.train, splits.val, splits.test) if isinstance(s, str)}
    assert named <= listed, f"{task.path}: splits {sorted(named - listed)} not in the mirror ({sorted(listed)})"


def test_matching_task_without_its_test_split_is_a_skip(tmp_path, tiny_arch, imagefolder_root, capsys):
    """A matching task whose folder has no test.jsonl: nothing written for it, the mode named in
    the summary, exit 1."""
    folder = tmp_path / "items"
    folder.mkdir()
    shutil.copy(next((imagefolder_root / "test" / "red").glob("*.png")), folder / "0.png")
    (folder / "val.jsonl").write_text(json.dumps({"image": "0.png", "captions": ["red", "blue"], "label": 0}) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "items.yaml").write_text(
        "name: items\nversion: 1\ndescription: d\ntype: matching\n"
        f"dataset: {{source: jsonl, path: {folder}}}\nsplits: {{test: test}}\n"
    )
    capsys.readouterr()
    rc = run_cli("--model", f"tiny={tiny_arch}", "--tasks", "items", "--tasks-dir", str(tasks),
                 "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "tiny / items / zeroshot not run: no split 'test'" in err and "(the source has: val)" in err
    assert not (tmp_path / "r" / "tiny" / "items.json").exists()
