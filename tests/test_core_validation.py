"""User errors, case by case: one line naming the file and field, exit code 2, no traceback,
and nothing written under the results folder.

Each task-file case goes through ``evalbench tasks validate FILE`` and ``evalbench run``; data and
model errors, which only a run can find, go through ``run``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CLASSES, write_task

from evalbench.cli import main
from evalbench.tasks.loader import load_task_file

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def checkpoint(tiny_arch, tmp_path_factory) -> Path:
    """A valid checkpoint of the tiny architecture (so no random-weights warning is logged)."""
    import open_clip

    open_clip.add_model_config(tiny_arch)
    torch.manual_seed(7)
    model, _, _ = open_clip.create_model_and_transforms(tiny_arch.stem, pretrained=None)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


def validate(capsys, *paths) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(["tasks", "validate", *map(str, paths)])
    out = capsys.readouterr().out
    return rc, out.splitlines()


def run(capsys, tmp_path, model: str, task: str) -> tuple[int, str, Path]:
    results = tmp_path / "results"
    capsys.readouterr()
    rc = main(
        [
            "run", "--no-progress", "--model", model, "--tasks", task, "--mode", "zeroshot,linear_probe",
            "--results-dir", str(results), "--cache-dir", str(tmp_path / "cache"),
        ]
    )  # fmt: skip
    return rc, capsys.readouterr().err, results


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("evalbench: error:")]


def written_under(results: Path) -> list[str]:
    return sorted(str(p.relative_to(results)) for p in results.rglob("*")) if results.exists() else []


def good_task(folder: Path, imagefolder_root: Path, name: str = "good", **overrides) -> Path:
    return write_task(folder, name, {"source": "imagefolder", "path": str(imagefolder_root)}, **overrides)


def edit(path: Path, **changes) -> Path:
    """Rewrite a task file with top-level keys changed (None deletes the key)."""
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- task-file errors


def _malformed(folder, images):
    path = folder / "malformed.yaml"
    path.write_text("name: malformed\nversion: 1\ndataset: {source: imagefolder\n  path: [x\n")
    return path


def _unknown_top(folder, images):
    return edit(good_task(folder, images, "unknown-top"), colour="red")


def _unknown_dataset_key(folder, images):
    return edit(good_task(folder, images, "unknown-ds"), dataset={"source": "imagefolder", "path": str(images), "revison": "v1"})


def _unknown_split_key(folder, images):
    return edit(good_task(folder, images, "unknown-split"), splits={"train": "train", "test": "test", "dev": "val"})


def _missing_test(folder, images):
    return edit(good_task(folder, images, "missing-test"), splits={"train": "train", "val": "val"})


def _template_without_slot(folder, images):
    return edit(good_task(folder, images, "template"), templates=["a photo of {c}.", "a photo of a thing."])


def _unknown_source(folder, images):
    return edit(good_task(folder, images, "source"), dataset={"source": "zipfolder", "path": str(images)})


def _include_cycle(folder, images):
    (folder / "b.yaml").write_text("include: a.yaml\nversion: 1\n")
    path = folder / "a.yaml"
    path.write_text("include: b.yaml\nname: a\n")
    return path


# (case, builder, field the line names, words the message must hold)
TASK_FILE_CASES = [
    ("malformed-yaml", _malformed, None, ["invalid YAML"]),
    ("unknown-top-level-key", _unknown_top, "colour", ["unknown key"]),
    ("unknown-dataset-key", _unknown_dataset_key, "dataset.revison", ["unknown key"]),
    ("unknown-splits-key", _unknown_split_key, "splits.dev", ["unknown key"]),
    ("missing-splits-test", _missing_test, "splits.test", ["required"]),
    ("template-without-slot", _template_without_slot, "templates", ["{c}", "a photo of a thing."]),
    ("unknown-source", _unknown_source, "dataset.source", ["zipfolder", "imagefolder"]),
    ("include-cycle", _include_cycle, "include", ["cycle", "a.yaml", "b.yaml"]),
]


@pytest.mark.parametrize("case, build, field, words", TASK_FILE_CASES, ids=[c[0] for c in TASK_FILE_CASES])
def test_tasks_validate_reports_one_line(case, build, field, words, tmp_path, imagefolder_root, capsys):
    path = build(tmp_path, imagefolder_root).resolve()
    rc, lines = validate(capsys, path)
    assert rc == 2
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith(f"{path}: "), line
    if field is not None:
        assert line.startswith(f"{path}: {field}: "), line
    else:
        assert re.match(rf"{re.escape(str(path))}: [^:]+: .+", line), line
    for word in words:
        assert word.lower() in line.lower(), (word, line)


@pytest.mark.parametrize("case, build, field, words", TASK_FILE_CASES, ids=[c[0] for c in TASK_FILE_CASES])
def test_run_rejects_bad_task_file(case, build, field, words, tmp_path, imagefolder_root, tiny_arch, checkpoint, capsys):
    path = build(tmp_path, imagefolder_root).resolve()
    rc, err, results = run(capsys, tmp_path, f"tiny={tiny_arch}@{checkpoint}", str(path))
    assert rc == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, lines  # the task file is checked before anything is logged or loaded
    assert lines[0].startswith(f"evalbench: error: {path}: "), lines[0]
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert written_under(results) == []


def test_tasks_validate_on_a_folder(tmp_path, imagefolder_root, capsys):
    """Good files (including an include base and a suite) pass; one bad file fails alone."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    good_task(folder, imagefolder_root, "one")
    base = good_task(folder, imagefolder_root, "_base")
    (folder / "two.yaml").write_text(f"include: {base.name}\nname: two\n")
    (folder / "suites").mkdir()
    (folder / "suites" / "both.yaml").write_text("name: both\ntasks: [one, two]\n")
    rc, lines = validate(capsys, folder)
    assert rc == 0, lines

    bad = edit(good_task(folder, imagefolder_root, "three"), colour="red").resolve()
    rc, lines = validate(capsys, folder)
    assert rc == 2
    assert lines == [f"{bad}: colour: unknown key"]


def test_validate_lists_every_problem_of_a_file(tmp_path, imagefolder_root, capsys):
    path = edit(good_task(tmp_path, imagefolder_root, "two-problems"), colour="red", shade="dark").resolve()
    rc, lines = validate(capsys, path)
    assert rc == 2
    assert sorted(lines) == [f"{path}: colour: unknown key", f"{path}: shade: unknown key"]


# ----------------------------------------------------------------------------- include merging


def test_include_deep_merges_mappings_and_replaces_lists(tmp_path, imagefolder_root, capsys):
    folder = tmp_path / "tasks"
    folder.mkdir()
    base = {
        "version": 1,
        "description": "base",
        "dataset": {"source": "hf", "path": "org/colours", "revision": "abc", "label_column": "colour"},
        "splits": {"train": "train", "val": "val", "test": "test"},
        "classnames": CLASSES,
        "templates": ["a photo of {c}.", "a {c} square.", "{c}."],
    }
    (folder / "_base.yaml").write_text(yaml.safe_dump(base))
    child = {
        "include": "_base.yaml",
        "name": "child",
        "version": 2,
        "dataset": {"revision": "def"},
        "splits": {"test": "holdout"},
        "templates": ["a picture of {c}."],
    }
    (folder / "child.yaml").write_text(yaml.safe_dump(child))
    expected = {
        "version": 2,
        "description": "base",
        "dataset": {"source": "hf", "path": "org/colours", "revision": "def", "label_column": "colour"},
        "splits": {"train": "train", "val": "val", "test": "holdout"},
        "classnames": CLASSES,
        "templates": ["a picture of {c}."],  # replaced, not appended
        "name": "child",
    }
    assert load_task_file(folder / "child.yaml").resolved == expected

    capsys.readouterr()
    assert main(["tasks", "show", "child", "--tasks-dir", str(folder)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == expected
    # The include-only base is not a task of its own.
    assert main(["tasks", "list", "*", "--tasks-dir", str(folder)]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "child" in listed and "_base" not in listed


def test_include_chain_of_three(tmp_path, imagefolder_root):
    folder = tmp_path / "tasks"
    folder.mkdir()
    good_task(folder, imagefolder_root, "_root", description="root description")
    (folder / "_middle.yaml").write_text("include: _root.yaml\nsplits: {val: null}\nmain_metric: mean_per_class_recall\n")
    (folder / "leaf.yaml").write_text("include: _middle.yaml\nname: leaf\n")
    task = load_task_file(folder / "leaf.yaml")
    assert task.name == "leaf"
    assert task.spec.description == "root description"
    assert task.spec.main_metric == "mean_per_class_recall"
    assert task.spec.splits.train == "train" and task.spec.splits.val is None and task.spec.splits.test == "test"


# ----------------------------------------------------------------------------- data errors (run only)


def _missing_data_folder(folder, images, hf_root):
    return write_task(folder, "nodata", {"source": "imagefolder", "path": str(folder / "absent")})


def _class_count_mismatch(folder, images, hf_root):
    return good_task(folder, images, "count", classnames=[*CLASSES, "yellow"])


def _hf_names_mismatch(folder, images, hf_root):
    return write_task(folder, "hfnames", {"source": "hf", "path": str(hf_root)}, classnames=["red", "green", "cyan"])


# (case, builder, field, words the message must hold). A split the data lacks is not among them:
# it skips only the modes that need it and exits 1 (tests/test_missing_splits.py).
DATA_CASES = [
    ("missing-data-folder", _missing_data_folder, "dataset.path", ["absent", "not found"]),
    ("class-count-mismatch", _class_count_mismatch, "classnames", ["4", "3"]),
    ("hf-label-names-mismatch", _hf_names_mismatch, "classnames", ["blue"]),
]


@pytest.mark.parametrize("case, build, field, words", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_run_data_error_is_one_error_line(
    case, build, field, words, tmp_path, imagefolder_root, hf_root, tiny_arch, checkpoint, capsys
):
    path = build(tmp_path, imagefolder_root, hf_root)
    rc, err, results = run(capsys, tmp_path, f"tiny={tiny_arch}@{checkpoint}", str(path))
    assert rc == 2
    assert "Traceback" not in err
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert err.splitlines()[-1] == errors[0]
    assert f" {field}: " in errors[0], errors[0]
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert not (results / "tiny" / f"{path.stem}.json").exists()


@pytest.mark.parametrize(
    "case, build",
    [
        pytest.param("missing-data-folder", _missing_data_folder),
        ("class-count-mismatch", _class_count_mismatch),
        ("hf-label-names-mismatch", _hf_names_mismatch),
    ],
)
def test_run_data_error_names_the_task_file(case, build, tmp_path, imagefolder_root, hf_root, tiny_arch, checkpoint, capsys):
    path = build(tmp_path, imagefolder_root, hf_root).resolve()
    rc, err, _ = run(capsys, tmp_path, f"tiny={tiny_arch}@{checkpoint}", str(path))
    assert rc == 2
    assert error_lines(err)[0].startswith(f"evalbench: error: {path}: "), err


@pytest.mark.parametrize("case, build", [(c[0], c[1]) for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_run_data_error_writes_nothing(case, build, tmp_path, imagefolder_root, hf_root, tiny_arch, checkpoint, capsys):
    path = build(tmp_path, imagefolder_root, hf_root)
    rc, _, results = run(capsys, tmp_path, f"tiny={tiny_arch}@{checkpoint}", str(path))
    assert rc == 2
    assert written_under(results) == []


def test_tasks_validate_accepts_data_problems_it_cannot_see(tmp_path, imagefolder_root, hf_root, capsys):
    """Documents the boundary: ``tasks validate`` checks the file, not the data behind it."""
    paths = [build(tmp_path, imagefolder_root, hf_root) for _, build, _, _ in DATA_CASES]
    rc, _ = validate(capsys, *paths)
    assert rc == 0


# ----------------------------------------------------------------------------- model errors (run only)


class ExecutesOnLoad:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _unknown_arch(tmp_path, arch, ckpt):
    return "tiny=ViT-B-99-nonexistent"


def _unknown_tag(tmp_path, arch, ckpt):
    return "ViT-B-32@nope"


def _missing_checkpoint(tmp_path, arch, ckpt):
    return f"tiny={arch}@{tmp_path / 'absent.pt'}"


def _code_executing_pickle(tmp_path, arch, ckpt):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": ExecutesOnLoad(tmp_path / "marker")}, path)
    return f"tiny={arch}@{path}"


def _mismatched_keys(tmp_path, arch, ckpt):
    state = torch.load(ckpt, weights_only=True)
    renamed = {("extra." + k if k in ("positional_embedding", "logit_scale") else k): v for k, v in state.items()}
    path = tmp_path / "renamed.pt"
    torch.save(renamed, path)
    return f"tiny={arch}@{path}"


MODEL_CASES = [
    ("unknown-architecture", _unknown_arch, ["unknown", "ViT-B-99-nonexistent"]),
    ("unknown-pretrained-tag", _unknown_tag, ["nope", "laion2b_s34b_b79k"]),
    ("missing-checkpoint", _missing_checkpoint, ["absent.pt", "not found"]),
]
# Weights that fail to load fail their model only: named in the end summary, exit status 1.
LOAD_CASES = [
    ("code-executing-pickle", _code_executing_pickle, ["evil.pt", "refused"]),
    (
        "mismatched-state-dict-keys",
        _mismatched_keys,
        ["missing", "unexpected", "positional_embedding", "extra.positional_embedding"],
    ),
]


@pytest.mark.parametrize("case, build, words", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_run_model_error_is_one_error_line(case, build, words, tmp_path, imagefolder_root, tiny_arch, checkpoint, capsys):
    task = good_task(tmp_path, imagefolder_root)
    model = build(tmp_path, tiny_arch, checkpoint)
    rc, err, results = run(capsys, tmp_path, model, str(task))
    assert rc == 2
    assert "Traceback" not in err
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert err.splitlines()[-1] == errors[0]
    assert errors[0].startswith("evalbench: error: --model: "), errors[0]
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert not (tmp_path / "marker").exists(), "the pickle's code ran"
    assert not (results / "tiny" / "good.json").exists()


@pytest.mark.parametrize(
    "case, build",
    [
        ("unknown-architecture", _unknown_arch),
        ("unknown-pretrained-tag", _unknown_tag),
        ("missing-checkpoint", _missing_checkpoint),
        pytest.param("code-executing-pickle", _code_executing_pickle),
        pytest.param("mismatched-state-dict-keys", _mismatched_keys),
    ],
)
def test_run_model_error_writes_nothing(case, build, tmp_path, imagefolder_root, tiny_arch, checkpoint, capsys):
    task = good_task(tmp_path, imagefolder_root)
    rc, _, results = run(capsys, tmp_path, build(tmp_path, tiny_arch, checkpoint), str(task))
    load_time = case in {c[0] for c in LOAD_CASES}  # exit 1 at the end: the model failed, by name
    assert rc == (1 if load_time else 2)
    assert written_under(results) == []


def test_code_executing_pickle_really_executes_when_unpickled(tmp_path):
    """The exploit is real: plain unpickling runs it. So the refusal above is meaningful."""
    import pickle

    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(ExecutesOnLoad(marker)))
    assert marker.exists()


def test_errors_are_not_tracebacks_with_debug_off(tmp_path, capsys):
    rc, err, _ = run(capsys, tmp_path, "tiny=ViT-B-99-nonexistent", str(tmp_path / "absent.yaml"))
    assert rc == 2
    assert "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("case, build, words", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_run_load_failure_names_the_model(case, build, words, tmp_path, imagefolder_root, tiny_arch, checkpoint, capsys):
    task = good_task(tmp_path, imagefolder_root)
    model = build(tmp_path, tiny_arch, checkpoint)
    rc, err, results = run(capsys, tmp_path, model, str(task))
    assert rc == 1 and "Traceback" not in err
    summary = err[err.index("1 model(s) failed to load"):].splitlines()
    assert len(summary) == 2 and summary[1].startswith("  tiny ("), err
    for word in words:
        assert word in summary[1], (word, summary[1])
    assert not (tmp_path / "marker").exists(), "the pickle's code ran"
    assert not (results / "tiny" / "good.json").exists()
