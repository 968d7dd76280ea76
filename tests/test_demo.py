"""The bundled checkpoints on the offline suite: what `make demo` shows, and the model card's
targets (evalbench/assets/README.md)."""

from __future__ import annotations

import pytest

from evalbench.cli import main
from evalbench.records import read_record

TASKS = ("digits", "shapes", "colors")
CHANCE = {"digits": 0.1, "shapes": 1 / 6, "colors": 1 / 6}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`evalbench run` with no --model and no --tasks: both checkpoints, the offline suite."""
    root = tmp_path_factory.mktemp("demo")
    rc = main(["run", "--results-dir", str(root / "results"), "--cache-dir", str(root / "cache"), "--no-progress"])
    assert rc == 0
    return {
        (model, task): read_record(root / "results" / model / f"{task}.json")["results"]
        for model in ("demo-early", "demo-final")
        for task in TASKS
    }


def test_default_run_covers_both_checkpoints_and_modes(demo):
    for results in demo.values():
        assert set(results) == {"zeroshot", "linear_probe"}


def test_digits_zeroshot_target(demo):
    assert demo["demo-final", "digits"]["zeroshot"]["acc1"] >= 0.70


def test_digits_probe_target(demo):
    assert demo["demo-final", "digits"]["linear_probe"]["acc1"] >= 0.92


@pytest.mark.parametrize("task", ["shapes", "colors"])
def test_shapes_zeroshot_targets(demo, task):
    assert demo["demo-final", task]["zeroshot"]["acc1"] >= 3 * CHANCE[task]


@pytest.mark.parametrize("task", TASKS)
def test_final_beats_early(demo, task):
    assert demo["demo-final", task]["zeroshot"]["acc1"] > demo["demo-early", task]["zeroshot"]["acc1"]
