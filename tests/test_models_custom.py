"""``py:MODULE:FACTORY`` models and entry-point plugins, with a hand-made colour model whose
zero-shot answer is known: an image's embedding is its mean RGB, a prompt's is the one-hot of the
colour word it names, so every test image of the colours tasks is classified correctly."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

import evalbench.cli
from evalbench.models import load_model, model_fingerprint, parse_model_spec

COLOUR_MODEL = textwrap.dedent(
    '''
    import torch
    from torchvision.transforms.functional import pil_to_tensor

    CALLS = []

    def to_tensor(image):
        return pil_to_tensor(image).float() / 255


    class MeanColour:
        """Images -> mean RGB; texts -> one-hot of the colour word."""

        def __init__(self, device):
            self.device = torch.device(device)
            self.preprocess = to_tensor

        def encode_images(self, pixels):
            return pixels.mean(dim=(2, 3))

        def encode_texts(self, texts):
            words = ["red", "green", "blue"]
            return torch.tensor([[float(w in t.split() or w + "." in t.split()) for w in words] for t in texts])


    def build(device):
        CALLS.append(device)
        return MeanColour(device)


    def build_broken():
        return object()


    # The plugin protocol: a module with Adapter(spec, device) and fingerprint(spec).
    class Adapter(MeanColour):
        def __init__(self, spec, device):
            super().__init__(device)
            self.spec, self.fingerprint = spec, fingerprint(spec)


    def fingerprint(spec):
        return "mean-colour-" + spec.target
    '''
)


@pytest.fixture
def colour_module(tmp_path, monkeypatch) -> str:
    name = f"colour_model_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(COLOUR_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def run(model: str, task_dir: Path, tmp_path: Path, task: str = "colours-folder") -> int:
    return evalbench.cli.main([
        "-q", "run", "--model", model, "--tasks", task, "--tasks-dir", str(task_dir),
        "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
        "--mode", "zeroshot", "--no-progress", "--device", "cpu",
    ])  # fmt: skip


def results(tmp_path: Path, name: str, task: str = "colours-folder") -> dict:
    return json.loads((tmp_path / "results" / name / f"{task}.json").read_text())["results"]


def test_factory_model_is_evaluated(colour_module, task_dir, tmp_path):
    import importlib

    assert run(f"colours=py:{colour_module}:build", task_dir, tmp_path, "colours-wds") == 0
    got = results(tmp_path, "colours", "colours-wds")
    assert got["zeroshot"]["acc1"] == 1.0  # a mixed-up class order or prompt would not score 1.0
    assert importlib.import_module(colour_module).CALLS == [torch.device("cpu")]


def test_factory_errors_are_one_line(colour_module, task_dir, tmp_path, capsys):
    cases = {
        f"py:{colour_module}:nothing": "has no callable 'nothing'",
        "py:no_such_module_xyz:build": "no module named 'no_such_module_xyz'",
        f"py:{colour_module}": "expected py:MODULE:FACTORY",
    }
    for spec, message in cases.items():
        assert run(f"x={spec}", task_dir, tmp_path) == 2, spec
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    # A factory that runs but returns no adapter is a failed load of that model: named, exit 1.
    assert run(f"x=py:{colour_module}:build_broken", task_dir, tmp_path) == 1
    err = capsys.readouterr().err
    assert "without preprocess, encode_images, encode_texts" in err[err.index("1 model(s) failed to load"):]


def test_fingerprint_follows_the_module_file(colour_module, tmp_path):
    spec = parse_model_spec(f"py:{colour_module}:build")
    before = model_fingerprint(spec)
    assert model_fingerprint(parse_model_spec(f"py:{colour_module}:build_broken")) != before
    path = tmp_path / f"{colour_module}.py"
    path.write_text(path.read_text() + "\n# changed\n")
    assert model_fingerprint(spec) != before


@pytest.fixture
def plugin(colour_module, tmp_path) -> str:
    """An installed distribution (a .dist-info on sys.path) registering the colour module."""
    dist = tmp_path / "colour_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: colour-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[evalbench.models]\nmeancolour = {colour_module}\n")
    return "meancolour"


def test_entry_point_plugin_is_a_family(plugin, task_dir, tmp_path):
    spec = parse_model_spec(f"{plugin}:any-args")
    assert (spec.family, spec.target) == (plugin, "any-args")
    assert model_fingerprint(spec) == "mean-colour-any-args"
    assert load_model(spec, torch.device("cpu")).encode_texts(["a red square."]).tolist() == [[1.0, 0.0, 0.0]]
    assert run(f"plug={plugin}:x", task_dir, tmp_path) == 0
    assert results(tmp_path, "plug")["zeroshot"]["acc1"] == 1.0


def test_unknown_prefix_stays_open_clip():
    spec = parse_model_spec("notaplugin:thing")
    assert spec.family == "open_clip" and spec.target == "notaplugin:thing"
