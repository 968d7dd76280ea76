"""Fine-tuned state_dict files: the layouts ``read_state_dict`` accepts, and ``ARCH@PATH`` round
trips through evalbench that reproduce an in-memory open_clip model's predictions."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSES
from PIL import Image

import evalbench.cli
from evalbench.errors import EvalbenchError
from evalbench.models import load_model, parse_model_spec
from evalbench.models.checkpoint import read_state_dict, skip_init
from evalbench.records import unpack_predictions

TEMPLATES = ["a photo of {c}.", "a {c} square."]  # conftest.write_task's templates


def _state() -> dict[str, torch.Tensor]:
    return {"visual.proj": torch.arange(6.0).reshape(2, 3), "logit_scale": torch.tensor(4.0)}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"model": s, "optimizer": {"lr": torch.tensor(0.1)}},
        lambda s: {"state_dict": {"module." + k: v for k, v in s.items()}},
    ],
    ids=["bare", "state_dict-key", "model-key", "ddp-prefix"],
)
def test_read_state_dict_layouts(wrap, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(wrap(_state()), path)
    got = read_state_dict(path)
    assert got.keys() == _state().keys()
    for key, value in _state().items():
        torch.testing.assert_close(got[key], value)


def test_read_state_dict_legacy_torch_format(tmp_path):
    """Files in torch's pre-1.6 format cannot be memory-mapped; they are read the plain way."""
    path = tmp_path / "legacy.pt"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    got = read_state_dict(path)
    torch.testing.assert_close(got["visual.proj"], _state()["visual.proj"])


def test_skip_init_builds_uninitialised_and_restores_init():
    original = torch.nn.init.normal_
    torch.manual_seed(0)
    with skip_init():
        skipped = torch.nn.Linear(4, 3)
        assert torch.nn.init.normal_ is not original
    assert torch.nn.init.normal_ is original
    torch.manual_seed(0)
    initialised = torch.nn.Linear(4, 3)
    torch.manual_seed(0)
    expected = torch.nn.Linear(4, 3)
    torch.testing.assert_close(initialised.weight, expected.weight)  # init runs again after the block
    skipped.load_state_dict(initialised.state_dict())
    torch.testing.assert_close(skipped(torch.ones(2, 4)), initialised(torch.ones(2, 4)))


def test_read_state_dict_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"module." + k: v for k, v in _state().items()}, str(path))
    assert sorted(read_state_dict(path)) == sorted(_state())


class _Payload:
    def __reduce__(self):
        return (print, ("this would run",))


def test_read_state_dict_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": _Payload()}, protocol=2))
    with pytest.raises(EvalbenchError, match="refused to load"):
        read_state_dict(path)


@pytest.fixture(scope="module")
def tuned(tiny_arch, tmp_path_factory):
    """A seeded (not seed-0) random tiny open_clip model and its state_dict saved two ways."""
    import open_clip
    from safetensors.torch import save_file

    open_clip.add_model_config(tiny_arch)
    torch.manual_seed(77)
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_arch.stem, pretrained=None)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("tuned")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 9}, folder / "ft.pt")
    save_file(state, str(folder / "ft.safetensors"))
    return model.eval(), preprocess, open_clip.get_tokenizer(tiny_arch.stem), folder


@torch.no_grad()
def in_memory_predictions(model, preprocess, tokenizer, imagefolder_root: Path) -> np.ndarray:
    files = sorted((imagefolder_root / "test").glob("*/*.png"))
    pixels = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files])
    img = F.normalize(model.encode_image(pixels), dim=-1)
    columns = []
    for name in CLASSES:
        emb = F.normalize(model.encode_text(tokenizer([t.format(c=name) for t in TEMPLATES])), dim=-1)
        columns.append(F.normalize(emb.mean(dim=0), dim=-1))
    return (img @ torch.stack(columns, dim=1)).argmax(dim=1).numpy()


def run(model: str, task_dir: Path, tmp_path: Path) -> int:
    return evalbench.cli.main([
        "-q", "run", "--model", model, "--tasks", "colours-folder", "--tasks-dir", str(task_dir),
        "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
        "--mode", "zeroshot", "--no-progress", "--device", "cpu",
    ])  # fmt: skip


def test_fine_tuned_state_dict_round_trip(tuned, tiny_arch, task_dir, imagefolder_root, tmp_path):
    model, preprocess, tokenizer, folder = tuned
    expected = in_memory_predictions(model, preprocess, tokenizer, imagefolder_root)
    for name, file in (("pt", "ft.pt"), ("st", "ft.safetensors")):
        assert run(f"{name}={tiny_arch}@{folder / file}", task_dir, tmp_path) == 0
        record = json.loads((tmp_path / "results" / name / "colours-folder.json").read_text())
        pred, _ = unpack_predictions(record["results"]["zeroshot"]["per_sample"])
        np.testing.assert_array_equal(pred, expected)


def test_fine_tuned_embeddings_equal_the_in_memory_model(tuned, tiny_arch, imagefolder_root):
    """Stronger than argmax on a tiny random model: the embeddings themselves match, and those of
    the seed-0 weights a bare ARCH gets do not."""
    model, preprocess, tokenizer, folder = tuned
    files = sorted((imagefolder_root / "test").glob("*/*.png"))[:4]
    pixels = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files])
    prompts = ["a photo of red.", "a blue square."]
    with torch.no_grad():
        want = model.encode_image(pixels), model.encode_text(tokenizer(prompts))
        for spec in (f"{tiny_arch}@{folder / 'ft.pt'}", f"{tiny_arch}@{folder / 'ft.safetensors'}"):
            adapter = load_model(parse_model_spec(spec), torch.device("cpu"))
            torch.testing.assert_close(adapter.encode_images(pixels), want[0])
            torch.testing.assert_close(adapter.encode_texts(prompts), want[1])
        random = load_model(parse_model_spec(str(tiny_arch)), torch.device("cpu"))
        assert not torch.allclose(random.encode_images(pixels), want[0])


def test_mismatched_keys_fail_the_model_naming_them(tuned, tiny_arch, task_dir, tmp_path, capsys):
    """A load failure is the model's, not the run's: named in the end summary, exit status 1."""
    model, _, _, _ = tuned
    state = dict(model.state_dict())
    state["visual.projection"] = state.pop("visual.proj")
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    assert run(f"bad={tiny_arch}@{path}", task_dir, tmp_path) == 1
    err = capsys.readouterr().err
    summary = err[err.index("1 model(s) failed to load"):].splitlines()[1]
    assert summary.startswith("  bad (")
    assert "missing keys (first: visual.proj)" in summary and "unexpected keys (first: visual.projection)" in summary
    assert "Traceback" not in err and not (tmp_path / "results" / "bad").exists()
