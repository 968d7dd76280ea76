"""Result records: where they go, what they hold, resume and skip rules, atomic writes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SPLIT_SIZES, write_task
from threadpoolctl import threadpool_limits

import evalbench
from evalbench.cli import main


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):  # tiny lbfgs fits: two contending BLAS threads are ~50x slower
        yield


def save_weights(arch: Path, path: Path, seed: int) -> Path:
    import open_clip

    open_clip.add_model_config(arch)
    torch.manual_seed(seed)
    model, _, _ = open_clip.create_model_and_transforms(arch.stem, pretrained=None)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_arch, tmp_path_factory) -> Path:
    return save_weights(tiny_arch, tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=11)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def folder_task(tmp_path, imagefolder_root) -> Path:
    """A private copy of the imagefolder task (tests edit it)."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    return write_task(tasks, "colours", {"source": "imagefolder", "path": str(imagefolder_root)})


def run(capsys, results: Path, cache: Path, model: str, task: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(
        ["run", "--no-progress", "--model", model, "--tasks", str(task), "--results-dir", str(results),
         "--cache-dir", str(cache), *extra]
    )  # fmt: skip
    return rc, capsys.readouterr().err


def snapshot(results: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(results)): (p.read_bytes(), p.stat().st_mtime_ns) for p in results.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- schema


def test_record_location_and_schema(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    import open_clip

    results = tmp_path / "results"
    before = datetime.now(timezone.utc).replace(microsecond=0)
    rc, err = run(capsys, results, cache_dir, f"tiny={tiny_arch}@{checkpoint}", folder_task)
    assert rc == 0, err
    path = results / "tiny" / "colours.json"
    assert [p for p in results.rglob("*.json")] == [path]
    record = json.loads(path.read_text())

    assert isinstance(record["schema_version"], int) and record["schema_version"] >= 1
    assert record["model"]["name"] == "tiny"
    assert record["model"]["spec"] == f"{tiny_arch}@{checkpoint}"
    assert isinstance(record["model"]["fingerprint"], str) and record["model"]["fingerprint"]
    task = yaml.safe_load(folder_task.read_text())
    assert record["task"]["name"] == "colours"
    assert str(record["task"]["version"]) == str(task["version"])
    assert isinstance(record["task"]["hash"], str) and record["task"]["hash"]

    zs = record["results"]["zeroshot"]
    for key in ("acc1", "mean_per_class_recall", "main_score"):
        assert 0.0 <= zs[key] <= 1.0
    assert zs["main_score"] == zs["acc1"]  # the task's main_metric
    assert "acc5" not in zs  # three classes
    assert zs["n"] == SPLIT_SIZES["test"]

    lp = record["results"]["linear_probe"]
    for key in ("acc1", "mean_per_class_recall", "main_score"):
        assert 0.0 <= lp[key] <= 1.0
    assert lp["main_score"] == lp["acc1"]
    assert lp["C"] > 0
    assert (lp["n_train"], lp["n_val"], lp["n"]) == (SPLIT_SIZES["train"], SPLIT_SIZES["val"], SPLIT_SIZES["test"])

    prov = record["provenance"]
    assert prov["evalbench"] == evalbench.__version__
    assert prov["torch"] == torch.__version__
    assert prov["open_clip"] == open_clip.__version__
    assert prov["device"] == "cpu"
    assert prov["seed"] == 0
    created = datetime.fromisoformat(prov["created_at"])
    assert created.tzinfo is not None
    assert before - timedelta(seconds=1) <= created <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert prov["duration_s"] >= 0


def test_main_score_follows_main_metric(tmp_path, capsys, imagefolder_root, tiny_arch, checkpoint, cache_dir):
    """On an unbalanced test split accuracy and mean per-class recall differ; main_score must be
    the task's main_metric."""
    import shutil

    root = tmp_path / "unbalanced"
    shutil.copytree(imagefolder_root, root)
    for f in sorted((root / "test" / "red").iterdir())[:3]:
        f.unlink()
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    task = write_task(tasks, "unbalanced", {"source": "imagefolder", "path": str(root)}, main_metric="mean_per_class_recall")
    rc, err = run(capsys, tmp_path / "results", cache_dir, f"tiny={tiny_arch}@{checkpoint}", task, "--mode", "zeroshot")
    assert rc == 0, err
    record = json.loads((tmp_path / "results" / "tiny" / "unbalanced.json").read_text())
    zs = record["results"]["zeroshot"]
    assert zs["acc1"] != pytest.approx(zs["mean_per_class_recall"]), "precondition: the metrics should differ"
    assert zs["main_score"] == zs["mean_per_class_recall"]
    assert record["task"]["main_metric"] == "mean_per_class_recall"


# ----------------------------------------------------------------------------- resume and skip


def test_rerun_skips_and_leaves_the_record_untouched(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    results = tmp_path / "results"
    model = f"tiny={tiny_arch}@{checkpoint}"
    assert run(capsys, results, cache_dir, model, folder_task)[0] == 0
    before = snapshot(results)
    rc, err = run(capsys, results, cache_dir, model, folder_task)
    assert rc == 0, err
    assert snapshot(results) == before


def test_modes_accumulate_in_one_record(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    results = tmp_path / "results"
    model = f"tiny={tiny_arch}@{checkpoint}"
    path = results / "tiny" / "colours.json"
    assert run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot")[0] == 0
    first = json.loads(path.read_text())
    assert set(first["results"]) == {"zeroshot"}

    assert run(capsys, results, cache_dir, model, folder_task, "--mode", "linear_probe")[0] == 0
    second = json.loads(path.read_text())
    assert set(second["results"]) == {"zeroshot", "linear_probe"}
    assert second["results"]["zeroshot"] == first["results"]["zeroshot"]

    # Both modes present now: asking for either again changes nothing.
    before = snapshot(results)
    assert run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot")[0] == 0
    assert snapshot(results) == before


def test_changed_task_needs_overwrite(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    results = tmp_path / "results"
    model = f"tiny={tiny_arch}@{checkpoint}"
    path = results / "tiny" / "colours.json"
    assert run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot")[0] == 0
    old = json.loads(path.read_text())
    before = snapshot(results)

    data = yaml.safe_load(folder_task.read_text())
    data["templates"] = ["a picture of {c}.", "something {c}."]
    folder_task.write_text(yaml.safe_dump(data))
    rc, err = run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot")
    assert rc == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("evalbench: error:")]
    assert len(errors) == 1 and "--overwrite" in errors[0] and str(path) in errors[0], err
    assert snapshot(results) == before

    rc, err = run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot", "--overwrite")
    assert rc == 0, err
    new = json.loads(path.read_text())
    assert new["task"]["hash"] != old["task"]["hash"]
    assert new["task"]["config"]["templates"] == data["templates"]


def test_same_name_other_spec_suggests_a_name(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    """Two sweeps whose checkpoints share a file stem land on one record name: the error says
    to name the second apart (NAME=SPEC) as well as --overwrite; a changed task does not."""
    results = tmp_path / "results"
    assert run(capsys, results, cache_dir, f"tiny={tiny_arch}@{checkpoint}", folder_task, "--mode", "zeroshot")[0] == 0
    other = save_weights(tiny_arch, tmp_path / "other.pt", seed=3)
    rc, err = run(capsys, results, cache_dir, f"tiny={tiny_arch}@{other}", folder_task, "--mode", "zeroshot")
    assert rc == 2 and "NAME=SPEC" in err and "--overwrite" in err, err


def test_changed_weights_at_the_same_path_are_not_silently_reused(tmp_path, capsys, folder_task, tiny_arch, cache_dir):
    results = tmp_path / "results"
    ckpt = save_weights(tiny_arch, tmp_path / "latest.pt", seed=1)
    model = f"tiny={tiny_arch}@{ckpt}"
    path = results / "tiny" / "colours.json"
    assert run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot")[0] == 0
    old = json.loads(path.read_text())
    save_weights(tiny_arch, ckpt, seed=2)  # new weights, same path
    rc, _ = run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot")
    new = json.loads(path.read_text())
    # Either refuse (exit 2, like a changed task) or recompute; never keep the stale record.
    assert rc == 2 or new["model"]["fingerprint"] != old["model"]["fingerprint"]


def test_task_without_train_split_skips_the_probe(tmp_path, capsys, imagefolder_root, tiny_arch, checkpoint, cache_dir):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    task = write_task(
        tasks, "test-only", {"source": "imagefolder", "path": str(imagefolder_root)}, splits={"test": "test"}
    )
    results = tmp_path / "results"
    model = f"tiny={tiny_arch}@{checkpoint}"
    rc, err = run(capsys, results, cache_dir, model, task)  # both modes requested (the default)
    assert rc == 0, err
    path = results / "tiny" / "test-only.json"
    record = json.loads(path.read_text())
    assert set(record["results"]) == {"zeroshot"}
    before = snapshot(results)
    assert run(capsys, results, cache_dir, model, task)[0] == 0
    assert snapshot(results) == before


# ----------------------------------------------------------------------------- files on disk


def test_no_temp_files_left_behind(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    results = tmp_path / "results"
    model = f"tiny={tiny_arch}@{checkpoint}"
    assert run(capsys, results, cache_dir, model, folder_task, "--mode", "zeroshot")[0] == 0
    assert run(capsys, results, cache_dir, model, folder_task, "--mode", "linear_probe")[0] == 0
    leftovers = [p.name for p in results.rglob("*") if p.name.endswith((".tmp", ".temp", "~")) or ".tmp" in p.name]
    assert leftovers == []


def test_results_folder_holds_only_records(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    results = tmp_path / "results"
    assert run(capsys, results, cache_dir, f"tiny={tiny_arch}@{checkpoint}", folder_task)[0] == 0
    files = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
    assert files == ["tiny/colours.json"]


def _valid_record(value: float) -> dict:
    return {"schema_version": 1, "model": {"name": "m", "spec": "m"}, "task": {"name": "t", "hash": "h"},
            "results": {"zeroshot": {"main_score": value}}}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    """A write that fails half-way keeps the old file whole and removes its temporary file."""
    from evalbench.fileio import atomic_write, atomic_write_text

    path = tmp_path / "m" / "t.json"
    atomic_write_text(path, "old")

    def write_half(f):
        f.write("new, but half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, write_half)
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.json"]


def test_invalid_record_is_never_written(tmp_path):
    """write_record validates against the Record model: a record lacking a field is an error
    naming the path and the field, and the old record stays."""
    from evalbench.errors import EvalbenchError
    from evalbench.records import read_record, write_record

    path = tmp_path / "m" / "t.json"
    write_record(path, _valid_record(0.5))
    broken = _valid_record(0.7)
    del broken["task"]["hash"]
    with pytest.raises(EvalbenchError, match=r"t\.json: task\.hash: Field required"):
        write_record(path, broken)
    assert read_record(path)["results"]["zeroshot"]["main_score"] == 0.5
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.json"]


def test_unreadable_record_is_an_error_not_a_silent_rerun(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    results = tmp_path / "results"
    path = results / "tiny" / "colours.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ half a record")
    rc, err = run(capsys, results, cache_dir, f"tiny={tiny_arch}@{checkpoint}", folder_task)
    assert rc == 2
    assert "Traceback" not in err and str(path) in err
    assert path.read_text() == "{ half a record"


def test_records_of_two_models_do_not_mix(tmp_path, capsys, folder_task, tiny_arch, checkpoint, cache_dir):
    other = save_weights(tiny_arch, tmp_path / "other.pt", seed=99)
    results = tmp_path / "results"
    capsys.readouterr()
    rc = main(
        ["run", "--no-progress", "--mode", "zeroshot", "--model", f"a={tiny_arch}@{checkpoint}",
         "--model", f"b={tiny_arch}@{other}", "--tasks", str(folder_task), "--results-dir", str(results),
         "--cache-dir", str(cache_dir)]
    )  # fmt: skip
    assert rc == 0
    a = json.loads((results / "a" / "colours.json").read_text())
    b = json.loads((results / "b" / "colours.json").read_text())
    assert a["model"]["name"] == "a" and b["model"]["name"] == "b"
    assert a["model"]["fingerprint"] != b["model"]["fingerprint"]


def test_each_mode_records_the_data_it_read(tmp_path, tiny_arch, imagefolder_root):
    import shutil

    from evalbench.data import load_task_data
    from evalbench.records import read_record
    from evalbench.tasks.loader import TaskRegistry

    data_root = tmp_path / "images"
    shutil.copytree(imagefolder_root, data_root)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_task(tasks, "colours", {"source": "imagefolder", "path": str(data_root)})
    args = ["run", "--no-progress", "--model", f"tiny={tiny_arch}", "--tasks", "colours", "--tasks-dir", str(tasks),
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--mode", "zeroshot"]) == 0
    expected = load_task_data(TaskRegistry([tasks]).get("colours"), ["test"], tmp_path / "cache").fingerprint

    extra = next((data_root / "train" / "red").glob("*.png"))
    shutil.copy(extra, extra.with_name("added.png"))  # the data changes before the probe runs
    assert main([*args, "--mode", "linear_probe"]) == 0
    record = read_record(tmp_path / "results" / "tiny" / "colours.json")
    assert record["results"]["zeroshot"]["data_fingerprint"] == expected
    assert record["results"]["linear_probe"]["data_fingerprint"] != expected
