"""The public Python API: evaluate, list_tasks, load_records, report; validated settings; the
typed record; source plugins; where checkpoint digests are remembered."""

from __future__ import annotations

import io
import json
import sys
from importlib.metadata import EntryPoint

import pandas as pd
import pytest
from conftest import write_task

import evalbench
from evalbench.cli import build_parser, main
from evalbench.config import RunConfig, choices
from evalbench.report.tables import NOT_METRICS


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One zero-shot run of the bundled demo model on 60 digits, through the Python API."""
    root = tmp_path_factory.mktemp("api")
    table = evalbench.evaluate(
        ["demo-final"], ["digits"], modes=["zeroshot"], limit=60, results_dir=root / "results",
        cache_dir=root / "cache", progress=False,
    )
    return root, table


def test_evaluate_returns_the_long_table_of_the_record(demo_run):
    root, table = demo_run
    assert list(table.columns) == ["model", "task", "mode", "metric", "value", "step"]
    assert table["step"].isna().all()  # a bundled model, not a checkpoint of a run
    assert set(table["model"]) == {"demo-final"} and set(table["task"]) == {"digits"}
    assert set(table["mode"]) == {"zeroshot"}
    record = json.loads((root / "results" / "demo-final" / "digits.json").read_text())
    for metric, value in record["results"]["zeroshot"].items():
        if isinstance(value, float) and metric not in NOT_METRICS:
            assert table.loc[table.metric == metric, "value"].item() == pytest.approx(value)
    assert "linear_probe" not in record["results"]


def test_evaluate_table_matches_report_csv(demo_run, capsys):
    """The same rows as ``evalbench report --format csv`` gives for the record."""
    root, table = demo_run
    capsys.readouterr()
    assert main(["report", "--results-dir", str(root / "results"), "--format", "csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    merged = table.merge(csv, on=["model", "task", "mode", "metric"], suffixes=("", "_csv"))
    assert len(merged) == len(table)
    assert (merged["value"] - merged["value_csv"]).abs().max() < 1e-12


def test_load_records_and_report(demo_run):
    root, _ = demo_run
    records = evalbench.load_records(root / "results")
    assert [type(r).__name__ for r in records] == ["Record"]
    assert records[0].model.name == "demo-final" and records[0].task.name == "digits"
    assert records[0].task.main_metric == "acc1"
    text = evalbench.report(root / "results", format="md")
    assert "demo-final" in text and "digits" in text
    out = root / "page" / "report.csv"
    csv = evalbench.report(root / "results", format="csv", output=out)
    assert out.read_text() == csv


def test_list_tasks():
    names = evalbench.list_tasks("*")
    assert {"digits", "shapes", "colors", "imagenet1k"} <= set(names)
    assert evalbench.list_tasks("imagenet-*") == sorted(n for n in names if n.startswith("imagenet-"))


BAD_SETTINGS = [
    ({"modes": ["zero-shot"]}, "modes: 'zero-shot' is not allowed (allowed: zeroshot, linear_probe)"),
    ({"precision": "bf16"}, "precision: 'bf16' is not allowed (allowed: fp32, amp)"),
    ({"probe_backend": "cuml"}, "probe_backend: 'cuml' is not allowed (allowed: sklearn, torch)"),
    ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
    ({"shots": [4, 0]}, "shots: Input should be greater than or equal to 1"),
    ({"device": "gpu"}, "device: unknown device 'gpu'"),
    ({"batchsize": 32}, "batchsize: unknown setting"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS, ids=lambda v: str(v)[:30])
def test_bad_setting_from_python_names_it_and_writes_nothing(settings, message, tmp_path):
    settings = {"modes": ["zeroshot"], **settings}
    with pytest.raises(evalbench.EvalbenchError) as err:
        evalbench.evaluate(["demo-final"], ["digits"], results_dir=tmp_path / "r", cache_dir=tmp_path / "c", **settings)
    assert isinstance(err.value, ValueError)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--mode", "zero-shot"], "evalbench: error: --mode: 'zero-shot' is not allowed (allowed: zeroshot, linear_probe)"),
    (["--shots", "1,0"], "evalbench: error: --shots: Input should be greater than or equal to 1"),
    (["--batch-size", "0"], "evalbench: error: --batch-size: Input should be greater than or equal to 1"),
    (["--device", "tpu"], "evalbench: error: --device: unknown device 'tpu'"),
])
def test_bad_setting_from_the_cli_is_one_line_naming_the_flag(argv, message, tmp_path, capsys):
    capsys.readouterr()
    rc = main(["run", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_cli_choices_are_the_settings_choices():
    """The CLI's choices come from the settings model: a value the model accepts is offered, and
    no other."""
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    by_flag = {a.option_strings[0]: a for a in run._actions if a.option_strings}
    for flag, setting in [("--precision", "precision"), ("--probe-backend", "probe_backend"),
                          ("--cache-dtype", "cache_dtype"), ("--on-bad-image", "on_bad_image")]:
        offered = tuple(by_flag[flag].choices)
        assert offered == choices(setting)
        for value in offered:
            RunConfig(**{setting: value})  # each offered value validates


def test_settings_accept_one_value_or_a_comma_separated_string():
    assert RunConfig(modes="zeroshot").modes == ("zeroshot",)
    assert RunConfig(modes="linear_probe,zeroshot,zeroshot").modes == ("linear_probe", "zeroshot")
    assert RunConfig(shots="1,2,4").shots == (1, 2, 4)
    assert RunConfig(shots=8).shots == (8,)


def test_digest_memo_follows_cache_dir_and_no_cache_writes_none(tmp_path, tiny_arch, imagefolder_root, capsys, monkeypatch):
    """Checkpoint digests are remembered in --cache-dir, and nowhere under --no-cache."""
    import open_clip
    import torch

    default = tmp_path / "default-cache"
    monkeypatch.setenv("EVALBENCH_CACHE", str(default))
    ckpt = tmp_path / "w.pt"
    open_clip.add_model_config(tiny_arch)
    model = open_clip.create_model(tiny_arch.stem, pretrained=None)
    torch.save(model.state_dict(), ckpt)
    task = write_task(tmp_path, "colours", {"source": "imagefolder", "path": str(imagefolder_root)})
    common = ["run", "--model", f"tiny={tiny_arch}@{ckpt}", "--tasks", str(task), "--mode", "zeroshot",
              "--limit", "6", "--no-progress"]
    assert main([*common, "--results-dir", str(tmp_path / "r1"), "--cache-dir", str(tmp_path / "mine")]) == 0
    memo = json.loads((tmp_path / "mine" / "digests.json").read_text())
    assert any(key.startswith(str(ckpt.resolve())) for key in memo)
    assert main([*common, "--results-dir", str(tmp_path / "r2"), "--no-cache"]) == 0
    # only the lock folder (locks are needed with or without a cache): no digests, no features
    assert sorted(p.name for p in default.iterdir()) == ["locks"]
    assert sorted(p.name for p in (tmp_path / "mine").glob("*.json")) == ["digests.json"]


def test_source_plugin_from_an_entry_point(tmp_path, imagefolder_root, tiny_arch, monkeypatch, capsys):
    """A third-party package registers a source kind under ``evalbench.sources``; tasks name it."""
    module = tmp_path / "plugin_pkg"
    module.mkdir()
    (module / "__init__.py").write_text(
        "from evalbench.sources.imagefolder import ImageFolderConfig, ImageFolderSource\n"
        "class FolderCopy(ImageFolderSource):\n"
        "    Config = ImageFolderConfig\n"
        "    loaded = []\n"
        "    def load_split(self, split):\n"
        "        FolderCopy.loaded.append(split)\n"
        "        return super().load_split(split)\n"
        "class NotASource:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint("foldercopy", "plugin_pkg:FolderCopy", "evalbench.sources"),
           EntryPoint("broken", "plugin_pkg:NotASource", "evalbench.sources")]
    import evalbench.sources.base as base

    monkeypatch.setattr(base, "entry_points", lambda group: [e for e in eps if e.group == group])
    assert {"foldercopy", "broken", "imagefolder"} <= set(base.source_kinds())
    task = write_task(tmp_path, "copied", {"source": "foldercopy", "path": str(imagefolder_root)})
    assert main(["tasks", "validate", str(task)]) == 0
    rc = main(["run", "--model", f"tiny={tiny_arch}", "--tasks", str(task), "--mode", "zeroshot", "--limit", "6",
               "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert rc == 0
    assert sys.modules["plugin_pkg"].FolderCopy.loaded == ["test"]
    assert json.loads((tmp_path / "r" / "tiny" / "copied.json").read_text())["results"]["zeroshot"]["n"] == 6
    broken = write_task(tmp_path, "broken", {"source": "broken", "path": str(imagefolder_root)})
    capsys.readouterr()
    assert main(["tasks", "validate", str(broken)]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"{broken}: dataset.source: plugin 'broken' (plugin_pkg:NotASource) lacks")
