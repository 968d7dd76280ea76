"""``hf:`` models: tiny random transformers dual encoders saved with ``save_pretrained``, evaluated
through evalbench and checked against the transformers documentation's own usage
(``processor(text=..., images=..., padding=True)``, ``logits_per_image.argmax``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLASSES, write_task
from PIL import Image

transformers = pytest.importorskip("transformers")

import evalbench.cli  # noqa: E402
from evalbench.errors import EvalbenchError  # noqa: E402
from evalbench.models import load_model, model_fingerprint, parse_model_spec  # noqa: E402
from evalbench.records import unpack_predictions  # noqa: E402

TEMPLATE = "a photo of {c}."  # one template: the prompt ensemble is then the documented usage
PROMPTS = [TEMPLATE.format(c=c) for c in CLASSES]
CPU = torch.device("cpu")
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@functools.lru_cache(maxsize=1)
def clip_tokenizer():
    """OpenAI CLIP's tokenizer built from open_clip's bundled BPE file (the same vocabulary)."""
    import open_clip

    bpe = open_clip.tokenizer.SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(k, k): v for k, v in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges)


def bert_tokenizer():
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", ".", *CLASSES]
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    folder = tmp_path_factory.mktemp("hf-clip")
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer()).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dual_dir(tmp_path_factory) -> Path:
    """A VisionTextDualEncoderModel: tiny ViT + tiny BERT, and their processor."""
    tokenizer = bert_tokenizer()
    config = transformers.VisionTextDualEncoderConfig.from_vision_text_configs(
        transformers.ViTConfig(image_size=32, patch_size=8, **TINY),
        transformers.BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY),
        projection_dim=16,
    )
    torch.manual_seed(1)
    model = transformers.VisionTextDualEncoderModel(config).eval()
    image_processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    folder = tmp_path_factory.mktemp("hf-dual")
    transformers.VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        folder
    )
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory) -> Path:
    config = transformers.SiglipConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=64, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY),
    )
    torch.manual_seed(2)
    model = transformers.SiglipModel(config).eval()
    folder = tmp_path_factory.mktemp("hf-siglip")
    model.save_pretrained(folder)
    clip_tokenizer().save_pretrained(folder)
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_template_tasks(tmp_path_factory, imagefolder_root) -> Path:
    folder = tmp_path_factory.mktemp("tasks-one-template")
    write_task(folder, "colours-one", {"source": "imagefolder", "path": str(imagefolder_root)}, templates=[TEMPLATE])
    return folder


def colour_test_images(imagefolder_root) -> tuple[list[Image.Image], np.ndarray]:
    """The test split in the task's row order (class folders, then files, sorted) and labels."""
    files = sorted((imagefolder_root / "test").glob("*/*.png"))
    return [Image.open(f).convert("RGB") for f in files], np.array([CLASSES.index(f.parent.name) for f in files])


def run(model: str, tasks_dir: Path, tmp_path: Path, *extra: str) -> int:
    return evalbench.cli.main([
        "-q", "run", "--model", model, "--tasks", "colours-one", "--tasks-dir", str(tasks_dir),
        "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
        "--mode", "zeroshot", "--no-progress", "--device", "cpu", *extra,
    ])  # fmt: skip


def zeroshot_predictions(tmp_path: Path, name: str) -> tuple[np.ndarray, np.ndarray, dict]:
    record = json.loads((tmp_path / "results" / name / "colours-one.json").read_text())
    pred, correct = unpack_predictions(record["results"]["zeroshot"]["per_sample"])
    return pred, correct, record


@torch.no_grad()
def documented_predictions(model, processor, images) -> np.ndarray:
    """Zero-shot as in the transformers CLIPModel docs."""
    inputs = processor(text=PROMPTS, images=images, return_tensors="pt", padding=True)
    return model(**inputs).logits_per_image.argmax(dim=1).numpy()


@pytest.mark.parametrize("kind", ["clip", "dual"])
def test_zeroshot_matches_documented_usage(kind, clip_dir, dual_dir, one_template_tasks, imagefolder_root, tmp_path):
    folder = {"clip": clip_dir, "dual": dual_dir}[kind]
    assert run(f"tiny=hf:{folder}", one_template_tasks, tmp_path) == 0
    pred, correct, record = zeroshot_predictions(tmp_path, "tiny")
    images, labels = colour_test_images(imagefolder_root)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    expected = documented_predictions(model, transformers.AutoProcessor.from_pretrained(folder), images)
    np.testing.assert_array_equal(pred, expected)
    np.testing.assert_array_equal(correct, expected == labels)
    assert record["results"]["zeroshot"]["acc1"] == pytest.approx(float(np.mean(expected == labels)))
    assert record["model"]["spec"] == f"hf:{folder}"


@pytest.mark.parametrize("kind", ["clip", "dual", "siglip"])
def test_embeddings_match_the_model(kind, clip_dir, dual_dir, siglip_dir, imagefolder_root):
    """The adapter's embeddings equal the model's own, with the padding each family expects."""
    folder = {"clip": clip_dir, "dual": dual_dir, "siglip": siglip_dir}[kind]
    adapter = load_model(parse_model_spec(f"hf:{folder}"), CPU)
    images, _ = colour_test_images(imagefolder_root)
    pixels = torch.stack([adapter.preprocess(img) for img in images])
    assert pixels.shape == (len(images), 3, 32, 32)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    image_processor = transformers.AutoImageProcessor.from_pretrained(folder)
    padding = {"padding": "max_length", "max_length": 64} if kind == "siglip" else {"padding": True}
    with torch.no_grad():
        want_img = model.get_image_features(**image_processor(images=images, return_tensors="pt")).pooler_output
        want_txt = model.get_text_features(**tokenizer(PROMPTS, return_tensors="pt", **padding)).pooler_output
        got_img, got_txt = adapter.encode_images(pixels), adapter.encode_texts(PROMPTS)
    torch.testing.assert_close(got_img, want_img, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_txt, want_txt, rtol=1e-4, atol=1e-5)
    if kind == "siglip":  # padding to the longest prompt would give other embeddings
        with torch.no_grad():
            longest = model.get_text_features(**tokenizer(PROMPTS, return_tensors="pt", padding=True)).pooler_output
        assert not torch.allclose(F.normalize(longest, dim=-1), F.normalize(want_txt, dim=-1), atol=1e-3)


def _perturbed(clip_dir: Path, seed: int):
    torch.manual_seed(seed)
    model = transformers.CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


def test_state_dict_over_base_model(clip_dir, one_template_tasks, imagefolder_root, tmp_path):
    model = _perturbed(clip_dir, seed=3)
    path = tmp_path / "fine_tuned_clip.pth"
    torch.save(model.state_dict(), path)
    assert run(f"ft=hf:{clip_dir}@{path}", one_template_tasks, tmp_path) == 0
    pred, _, record = zeroshot_predictions(tmp_path, "ft")
    images, _ = colour_test_images(imagefolder_root)
    processor = transformers.AutoProcessor.from_pretrained(clip_dir)
    np.testing.assert_array_equal(pred, documented_predictions(model, processor, images))
    base = transformers.CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():  # the perturbed weights really were loaded: the logits differ from the base's
        inputs = processor(text=PROMPTS, images=images, return_tensors="pt", padding=True)
        assert not torch.allclose(model(**inputs).logits_per_image, base(**inputs).logits_per_image)
    assert record["model"]["fingerprint"] != model_fingerprint(parse_model_spec(f"hf:{clip_dir}"))


def test_state_dict_with_wrong_keys_names_them(clip_dir, one_template_tasks, tmp_path, capsys):
    state = transformers.CLIPModel.from_pretrained(clip_dir).state_dict()
    state["text_projection.extra"] = state.pop("text_projection.weight")
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    capsys.readouterr()
    assert run(f"bad=hf:{clip_dir}@{path}", one_template_tasks, tmp_path) == 1  # the model failed, named
    err = capsys.readouterr().err
    summary = err[err.index("1 model(s) failed to load"):].splitlines()[1]
    assert summary.startswith("  bad (")
    assert "missing keys (first: text_projection.weight)" in summary
    assert "unexpected keys (first: text_projection.extra)" in summary


def test_uncached_hub_model_offline_is_one_line_error(one_template_tasks, tmp_path, capsys):
    assert run("hf:evalbench-tests/no-such-model", one_template_tasks, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not in the local Hugging Face cache" in err and "HF_HUB_OFFLINE" in err


def test_missing_local_folder(tmp_path):
    with pytest.raises(EvalbenchError, match="folder not found"):
        model_fingerprint(parse_model_spec(f"hf:{tmp_path}/nowhere"))


def test_fingerprint_follows_files(clip_dir, tmp_path):
    """Cheap (no model is built) and sensitive to the config and the weights."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(clip_dir, copy)
    fp = lambda d: model_fingerprint(parse_model_spec(f"hf:{d}"))  # noqa: E731
    assert fp(copy) == fp(clip_dir)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "logit_scale_init_value": 1.0}))
    assert fp(copy) != fp(clip_dir)
    shutil.copy(clip_dir / "config.json", copy / "config.json")
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    assert fp(copy) != fp(clip_dir)


@pytest.mark.parametrize("flag", [False, True])
def test_trust_remote_code_is_off_unless_asked(flag, clip_dir, one_template_tasks, tmp_path, monkeypatch):
    seen = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoImageProcessor):
        real = cls.from_pretrained

        def spy(*args, _real=real, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    extra = ["--trust-remote-code"] if flag else []
    assert run(f"tiny=hf:{clip_dir}", one_template_tasks, tmp_path, *extra) == 0
    # config, tokenizer and image processor at least (AutoTokenizer reads the config again)
    assert len(seen) >= 3 and all(value is flag for value in seen)


def _hf_cached(repo: str, filenames: tuple[str, ...]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in filenames)


def test_parity_open_clip_and_transformers_vit_b_32(task_dir, tmp_path):
    """The same OpenAI ViT-B/32 weights give the same zero-shot predictions through both families."""
    import open_clip

    oc_repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].strip("/")
    oc_files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if not _hf_cached(oc_repo, oc_files):
        pytest.skip(f"open_clip's ViT-B-32@openai weights ({oc_repo}) are not in the local Hugging Face cache")
    if not _hf_cached("openai/clip-vit-base-patch32", ("model.safetensors", "pytorch_model.bin")):
        pytest.skip("openai/clip-vit-base-patch32 is not in the local Hugging Face cache")
    args = ["-q", "run", "--tasks", "colours-folder", "--tasks-dir", str(task_dir), "--mode", "zeroshot",
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    models = ["oc=ViT-B-32@openai", "hf=hf:openai/clip-vit-base-patch32"]
    assert evalbench.cli.main([*args, "--model", models[0], "--model", models[1]]) == 0
    preds = [
        unpack_predictions(json.loads((tmp_path / "results" / n / "colours-folder.json").read_text())["results"]
                           ["zeroshot"]["per_sample"])[0]
        for n in ("oc", "hf")
    ]  # fmt: skip
    np.testing.assert_array_equal(preds[0], preds[1])


def test_remote_code_model_needs_the_flag(tmp_path):
    """A config naming code in its repository is refused without --trust-remote-code, before any
    of that code could be fetched or run."""
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "mystery", "auto_map": {"AutoConfig": "configuration_mystery.MysteryConfig"},
    }))  # fmt: skip
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(EvalbenchError, match="needs code from the repository; pass --trust-remote-code"):
        load_model(parse_model_spec(f"hf:{tmp_path}"), CPU)


def _hub_snapshot(cache: Path, repo_id: str, folder: Path, commit: str) -> None:
    """Files of ``folder`` as a download of ``repo_id`` at ``commit`` leaves them in the HF cache."""
    from conftest import hub_file

    for f in sorted(folder.iterdir()):
        hub_file(cache, repo_id, f.name, f.read_bytes(), commit)


def test_hub_model_is_keyed_by_its_resolved_commit(clip_dir, one_template_tasks, tmp_path, monkeypatch):
    """hf:ORG/NAME from the hub cache: keyed by the commit ``main`` resolves to, never by
    ``main`` itself. A new commit makes a rerun recompute features and classifier (even with the
    same files); the same commit does not."""
    import huggingface_hub.constants

    from conftest import Counts

    cache = tmp_path / "hf-hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    _hub_snapshot(cache, "evalbench-tests/tiny-hf-clip", clip_dir, "a" * 40)
    counts = Counts(monkeypatch)
    model = "hub=hf:evalbench-tests/tiny-hf-clip"
    assert run(model, one_template_tasks, tmp_path, "--overwrite") == 0
    assert counts.take() == (1, 1)
    first = zeroshot_predictions(tmp_path, "hub")[2]["model"]["fingerprint"]
    assert run(model, one_template_tasks, tmp_path, "--overwrite") == 0
    assert counts.take() == (0, 0)
    _hub_snapshot(cache, "evalbench-tests/tiny-hf-clip", clip_dir, "b" * 40)  # main moved
    assert run(model, one_template_tasks, tmp_path, "--overwrite") == 0
    assert counts.take() == (1, 1)
    assert zeroshot_predictions(tmp_path, "hub")[2]["model"]["fingerprint"] != first


def test_uncached_hub_model_online_is_keyed_by_the_hubs_commit(monkeypatch):
    """Online and not cached: the commit comes from the hub's answer (a HEAD request), so the key
    is the commit that will be downloaded, not a placeholder for "latest"."""
    import huggingface_hub
    import huggingface_hub.constants

    from conftest import FakeHub

    hub = FakeHub({("evalbench-tests/online-clip", "config.json"): ("c" * 40, "etag")})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", hub)
    spec = parse_model_spec("hf:evalbench-tests/online-clip")
    before = model_fingerprint(spec)
    assert hub.asked
    hub.files[("evalbench-tests/online-clip", "config.json")] = ("d" * 40, "etag")
    assert model_fingerprint(spec) != before
    with pytest.raises(EvalbenchError, match="cannot resolve its commit"):
        model_fingerprint(parse_model_spec("hf:evalbench-tests/not-on-the-hub"))
