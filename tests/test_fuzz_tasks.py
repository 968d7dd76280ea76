"""Fuzzing task files: any mutation of a valid task gives a clean error or a valid run."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evalbench.cli import main

from conftest import CLASSES

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**12), st.floats(allow_nan=True), st.text(max_size=30),
    st.just("{c}"), st.just("../../../etc"), st.just("a photo of a {c}."),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=5),
    st.lists(st.text(max_size=10), min_size=200, max_size=2000),  # huge lists
    st.dictionaries(st.text(max_size=8), SCALARS, max_size=3),
)
PATHS = [
    ("name",), ("version",), ("description",), ("type",), ("dataset",), ("dataset", "source"),
    ("dataset", "path"), ("dataset", "extra"), ("splits",), ("splits", "test"), ("splits", "train"),
    ("splits", "val"), ("classnames",), ("templates",), ("main_metric",), ("label_match",),
    ("label_names",), ("class_subset",), ("include",), ("unknown_key",),
]


def base_task(folder) -> dict:
    return {
        "name": "fuzz", "version": 1, "description": "fuzzed", "dataset": {"source": "imagefolder", "path": str(folder)},
        "splits": {"train": "train", "val": "val", "test": "test"}, "classnames": list(CLASSES),
        "templates": ["a photo of {c}."], "main_metric": "acc1",
    }


def mutate(task: dict, path: tuple, action: str, value) -> dict:
    task = copy.deepcopy(task)
    parent = task
    for key in path[:-1]:
        if not isinstance(parent.get(key), dict):
            parent[key] = {}
        parent = parent[key]
    if action == "drop":
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return task


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mutations=st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["drop", "set"]), VALUES), min_size=1, max_size=3),
)
@example(mutations=[(("dataset", "source"), "set", [])])  # once crashed validate_dataset: unhashable list
@example(mutations=[(("splits", "train"), "set", "")])  # an empty split name once reached the probe
@example(mutations=[(("splits", "test"), "set", "{c}")])  # a split the data lacks: exit 1, not a crash
@example(mutations=[(("splits", "val"), "set", {"\x1e": None})])  # a control character in a key: still one line
def test_mutated_task_fails_cleanly_or_runs(mutations, tmp_path, imagefolder_root, tiny_arch, capsys):
    task = base_task(imagefolder_root)
    for path, action, value in mutations:
        task = mutate(task, path, action, value)
    file = tmp_path / "fuzz.yaml"
    file.write_text(yaml.safe_dump(task, allow_unicode=True))
    rc = main(["tasks", "validate", str(file)])
    out = capsys.readouterr()
    assert rc in (0, 2)
    assert "Traceback" not in out.out + out.err
    if rc == 2:
        assert out.out.strip() and all(line.startswith(str(file)) for line in out.out.strip().splitlines())
        return
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks", str(file), "--results-dir", str(tmp_path / "r"),
               "--no-cache", "--limit", "6", "--no-progress", "--overwrite"])
    err = capsys.readouterr().err
    assert rc in (0, 1, 2), err
    assert "Traceback" not in err
    if rc == 1:  # ran what it could; the summary names each mode not run for a missing split
        assert "result(s) skipped, their task naming a split its data lacks" in err
    if rc == 2:
        assert len([line for line in err.splitlines() if line.startswith("evalbench: error:")]) == 1


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_text_is_a_clean_error(text, tmp_path, capsys):
    file = tmp_path / "junk.yaml"
    file.write_text(text, encoding="utf-8")
    rc = main(["tasks", "validate", str(file)])
    out = capsys.readouterr().out
    assert rc == 2
    assert out.strip().startswith(str(file))
