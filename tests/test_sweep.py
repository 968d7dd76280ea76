"""Checkpoint sweeps: glob model specs (natural order, names, steps, runs), per-model load
failures, and schema 3 records (model.step, model.run) next to older ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import evalbench
from evalbench.cli import main
from evalbench.errors import EvalbenchError
from evalbench.models import ASSETS
from evalbench.models.sweep import expand_model_spec, expand_model_specs, own_step, recorded_step
from evalbench.records import SCHEMA_VERSION, Record, load_record

DEMO_ARCH = ASSETS / "demo-clip.json"
FAST = ["--tasks", "digits", "--limit", "40", "--mode", "zeroshot", "--no-progress"]


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_glob_expands_in_natural_order_with_names_steps_and_runs(tmp_path):
    ckpts = tmp_path / "runs" / "exp1" / "checkpoints"
    touch(ckpts, "epoch_10.pt", "epoch_2.pt", "epoch_1.pt", "notes.txt")
    specs = expand_model_spec(f"ViT-B-32@{ckpts}/epoch_*.pt")
    assert [s.name for s in specs] == ["epoch_1", "epoch_2", "epoch_10"]
    assert [s.step for s in specs] == [1, 2, 10]
    assert {s.run for s in specs} == {"exp1"}  # the generic 'checkpoints' folder is skipped
    assert specs[2].spec == f"ViT-B-32@{ckpts}/epoch_10.pt" and specs[2].family == "open_clip"

    named = expand_model_spec(f"base=ViT-B-32@{ckpts}/epoch_*.pt")
    assert [s.name for s in named] == ["base/epoch_1", "base/epoch_2", "base/epoch_10"]
    assert {s.run for s in named} == {"base"} and named[0].slug == "base_epoch_1"


def test_glob_in_config_json_and_hf_specs(tmp_path):
    touch(tmp_path / "ft", "step-500.pth", "step-1500.pth")
    touch(tmp_path / "ck", "w_step100.safetensors")
    hf = expand_model_spec(f"hf:openai/clip-vit-base-patch32@{tmp_path}/ft/*.pth")
    assert [(s.family, s.target, s.step, s.run) for s in hf] == [
        ("hf", f"openai/clip-vit-base-patch32@{tmp_path}/ft/step-500.pth", 500, "ft"),
        ("hf", f"openai/clip-vit-base-patch32@{tmp_path}/ft/step-1500.pth", 1500, "ft"),
    ]
    [config] = expand_model_spec(f"{DEMO_ARCH}@{tmp_path}/ck/*.safetensors")
    assert config.name == "w_step100" and config.step == 100 and config.target.startswith(str(DEMO_ARCH) + "@")


def test_specs_without_a_glob_are_unchanged(tmp_path):
    literal = tmp_path / "odd[1].pt"  # glob characters in a file that exists: the file itself
    literal.write_bytes(b"x")
    [spec] = expand_model_spec(f"ViT-B-32@{literal}")
    assert spec.target == f"ViT-B-32@{literal}" and spec.step is None and spec.run is None
    assert [s.name for s in expand_model_specs(["demo-final", "ViT-B-32@openai"])] == ["demo-final", "ViT-B-32@openai"]


def test_glob_matching_nothing_names_the_pattern(tmp_path, capsys):
    pattern = f"{tmp_path}/none/epoch_*.pt"
    with pytest.raises(EvalbenchError, match="epoch_\\*.pt: the glob matches no checkpoint file"):
        expand_model_spec(f"ViT-B-32@{pattern}")
    code = main(["run", "--model", f"ViT-B-32@{pattern}", *FAST, "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and pattern in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_own_step_from_safetensors_metadata_and_torch_checkpoints(tmp_path):
    weights = {"w": torch.zeros(2)}
    save_file(weights, tmp_path / "a_7.safetensors", metadata={"step": "1200"})
    save_file(weights, tmp_path / "b_7.safetensors")
    torch.save({"epoch": 3, "state_dict": weights, "optimizer": {"lr": 0.1}}, tmp_path / "c_7.pt")
    torch.save(weights, tmp_path / "d_7.pt")
    (tmp_path / "e_7.pt").write_bytes(b"not a checkpoint")
    assert [own_step(tmp_path / n) for n in ("a_7.safetensors", "b_7.safetensors", "c_7.pt", "d_7.pt", "e_7.pt")] == [
        1200, None, 3, None, None]
    steps = {s.name: recorded_step(s) for s in expand_model_spec(f"ViT-B-32@{tmp_path}/*_7.*")}
    assert steps == {"a_7": 1200, "b_7": 7, "c_7": 3, "d_7": 7, "e_7": 7}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """exp1/checkpoints: epoch_1 (demo-early), epoch_2 (a corrupt file), epoch_10 (demo-final,
    whose metadata says step 5000), evaluated by one `evalbench run` with a glob."""
    root = tmp_path_factory.mktemp("sweep")
    ckpts = root / "exp1" / "checkpoints"
    ckpts.mkdir(parents=True)
    shutil.copy(ASSETS / "demo-early.safetensors", ckpts / "epoch_1.safetensors")
    (ckpts / "epoch_2.safetensors").write_bytes(b"\x00" * 64)
    save_file(load_file(ASSETS / "demo-final.safetensors"), ckpts / "epoch_10.safetensors", metadata={"step": "5000"})
    return root, ckpts


def test_sweep_run_records_steps_and_a_bad_file_fails_alone(sweep, capsys):
    root, ckpts = sweep
    argv = ["run", "--model", f"{DEMO_ARCH}@{ckpts}/epoch_*.safetensors", *FAST,
            "--results-dir", str(root / "results"), "--cache-dir", str(root / "cache")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    summary = err[err.index("1 model(s) failed to load"):]
    assert "epoch_2" in summary and "epoch_2.safetensors" in summary and "Traceback" not in err
    early, final = (load_record(root / "results" / n / "digits.json") for n in ("epoch_1", "epoch_10"))
    assert (early.model.step, early.model.run) == (1, "exp1")
    assert (final.model.step, final.model.run) == (5000, "exp1")  # the checkpoint's own step wins
    assert final.results["zeroshot"]["acc1"] > early.results["zeroshot"]["acc1"]  # demo-final is the trained one
    assert not (root / "results" / "epoch_2").exists()
    assert json.loads((root / "results" / "epoch_1" / "digits.json").read_text())["schema_version"] == SCHEMA_VERSION == 3


def test_evaluate_lists_failed_models_in_attrs(sweep):
    root, ckpts = sweep
    table = evalbench.evaluate(f"{DEMO_ARCH}@{ckpts}/epoch_*.safetensors", "digits", modes="zeroshot", limit=40,
                               results_dir=root / "results", cache_dir=root / "cache", progress=False)
    [failed] = table.attrs["failed"]
    assert failed.name == "epoch_2" and "epoch_2.safetensors" in failed.spec and "not a readable checkpoint" in failed.reason
    assert set(table["model"]) == {"epoch_1", "epoch_10"}


def test_a_model_of_another_architecture_fails_by_name(tmp_path, tiny_arch, capsys):
    """Weights that do not fit the architecture: the error names the model; the next one runs."""
    argv = ["run", "--model", f"wrong={tiny_arch}@{ASSETS / 'demo-early.safetensors'}", "--model", "demo-final",
            *FAST, "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "wrong (" in err and "do not fit the architecture" in err
    assert (tmp_path / "results" / "demo-final" / "digits.json").is_file()
    assert not (tmp_path / "results" / "wrong").exists()


def test_schema_2_record_still_loads_and_reports(sweep, tmp_path):
    root, _ = sweep
    data = json.loads((root / "results" / "epoch_1" / "digits.json").read_text())
    data["schema_version"] = 2
    del data["model"]["step"], data["model"]["run"]
    old = tmp_path / "results" / "old-model" / "digits.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps(data))
    record = load_record(old)
    assert isinstance(record, Record) and record.schema_version == 2
    assert record.model.step is None and record.model.run is None
    shutil.copytree(root / "results" / "epoch_10", tmp_path / "results" / "epoch_10")
    text = evalbench.report(tmp_path / "results", format="csv")
    assert "epoch_1," in text and "epoch_10," in text
