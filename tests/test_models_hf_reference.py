"""``hf:`` adapters against each family's documented pipeline, on tiny random models with real
tokenizer classes built offline, and a test per known trap.

- CLIPModel: ``CLIPProcessor(text=..., images=..., padding=True)``, ``get_image_features`` /
  ``get_text_features`` (the transformers docs' usage).
- SigLIP (``SiglipModel``, also SigLIP 2 at a fixed resolution): text padded to ``max_length``
  (64), the image processor's square resize without a centre crop; logit scale and bias are not
  applied, and the ranking is the model's own ``logits_per_image`` ranking.
- SigLIP 2 NaFlex (``Siglip2Model``): the processor's patches, patch mask and patch grid.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

transformers = pytest.importorskip("transformers")

import evalbench.cli  # noqa: E402
from conftest import CLASSES, write_task  # noqa: E402
from evalbench.models import load_model, parse_model_spec  # noqa: E402
from evalbench.records import unpack_predictions  # noqa: E402
from test_models_hf import clip_tokenizer  # noqa: E402

CPU = torch.device("cpu")
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
# Prompts of different token lengths, so that padding to the longest differs from max_length.
PROMPTS = ["a photo of red.", "a photo of a green square.", "blue", "a photo of a large blue circle."]
SENTENCES = [*PROMPTS, "a photo of green.", "a red square.", "a small green circle."]
TOL = dict(rtol=1e-4, atol=1e-5)


def non_square_images(n: int = 4) -> list[Image.Image]:
    """Seeded 48x32 and 32x48 images with structure up to the borders: a centre crop drops what a
    squash keeps, so the two resize pipelines give different pixels."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        w, h = (48, 32) if i % 2 == 0 else (32, 48)
        ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        images.append(Image.fromarray(np.clip(ramp + rng.normal(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)))
    return images


def gemma_style_tokenizer() -> transformers.PreTrainedTokenizerBase:
    """SigLIP 2's tokenizer class (Gemma BPE, lower-cased, byte fallback) over a character
    vocabulary with a few merges: no sentencepiece and no download needed."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for ch in "▁abcdefghijklmnopqrstuvwxyz.,":
        vocab[ch] = len(vocab)
    merges = [("▁", "a"), ("p", "h"), ("o", "t"), ("ph", "ot"), ("e", "d")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return transformers.Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=64)


def sentencepiece_tokenizer(folder: Path) -> transformers.PreTrainedTokenizerBase:
    """SigLIP's own tokenizer class over a sentencepiece model trained here on a few sentences."""
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 20), model_writer=model, vocab_size=40, model_type="unigram",
        pad_id=-1, bos_id=-1, eos_id=1, unk_id=2, eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False,
        minloglevel=2,
    )  # fmt: skip
    (folder / "spiece.model").write_bytes(model.getvalue())
    return transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=64)


def siglip_model(seed: int, vocab_size: int) -> transformers.SiglipModel:
    config = transformers.SiglipConfig(
        text_config=dict(vocab_size=vocab_size, max_position_embeddings=64, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY),
    )
    torch.manual_seed(seed)
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():  # a bias far from 0 and a scale far from 1: neither may move the ranking
        model.logit_scale.fill_(np.log(7.0))
        model.logit_bias.fill_(-12.5)
    return model


def save(folder: Path, model, processor) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def siglip_sp_dir(tmp_path_factory) -> Path:
    """SigLIP: SiglipModel, SiglipTokenizer (sentencepiece), SiglipImageProcessor (squash to 32)."""
    folder = tmp_path_factory.mktemp("siglip-sp")
    tokenizer = sentencepiece_tokenizer(folder)
    processor = transformers.SiglipProcessor(
        image_processor=transformers.SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    return save(folder, siglip_model(4, len(tokenizer)), processor)


@pytest.fixture(scope="module")
def siglip2_dir(tmp_path_factory) -> Path:
    """SigLIP 2 at a fixed resolution, as google/siglip2-*-224 ship it: a SiglipModel with the
    Gemma-style tokenizer and SigLIP's image processor."""
    tokenizer = gemma_style_tokenizer()
    processor = transformers.SiglipProcessor(
        image_processor=transformers.SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    return save(tmp_path_factory.mktemp("siglip2"), siglip_model(5, len(tokenizer)), processor)


@pytest.fixture(scope="module")
def naflex_dir(tmp_path_factory) -> Path:
    """SigLIP 2 NaFlex: Siglip2Model and Siglip2Processor (aspect-preserving patch grids)."""
    tokenizer = gemma_style_tokenizer()
    config = transformers.Siglip2Config(
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=64, **TINY),
        vision_config=dict(num_patches=256, patch_size=16, **TINY),
    )
    torch.manual_seed(6)
    model = transformers.Siglip2Model(config).eval()
    # The released NaFlex checkpoints' settings: Siglip2Processor's call defaults (patch_size=16,
    # max_num_patches=256) override whatever the image processor was saved with.
    processor = transformers.Siglip2Processor(
        image_processor=transformers.Siglip2ImageProcessor(patch_size=16, max_num_patches=256), tokenizer=tokenizer
    )
    return save(tmp_path_factory.mktemp("siglip2-naflex"), model, processor)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=49408, max_position_embeddings=77, **TINY),
        vision_config=dict(image_size=32, patch_size=8, **TINY),
        projection_dim=16,
    )
    torch.manual_seed(7)
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = transformers.CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer())
    return save(tmp_path_factory.mktemp("clip"), transformers.CLIPModel(config).eval(), processor)


def adapter_features(folder: Path, images, prompts=PROMPTS):
    adapter = load_model(parse_model_spec(f"hf:{folder}"), CPU)
    with torch.no_grad():
        pixels = torch.stack([adapter.preprocess(img) for img in images])
        return adapter, pixels, adapter.encode_images(pixels), adapter.encode_texts(prompts)


def model_and_processor(folder: Path):
    return transformers.AutoModel.from_pretrained(folder).eval(), transformers.AutoProcessor.from_pretrained(folder)


@torch.no_grad()
def text_features(model, inputs) -> torch.Tensor:
    return model.get_text_features(**inputs).pooler_output


@torch.no_grad()
def image_features(model, inputs) -> torch.Tensor:
    return model.get_image_features(**inputs).pooler_output


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Directions differ beyond float noise (features are compared normalised, as scored)."""
    return not torch.allclose(F.normalize(a, dim=-1), F.normalize(b, dim=-1), atol=1e-3)


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_matches_its_documented_pipeline(kind, request):
    """The SigLIP docs: ``processor(text=..., images=..., padding="max_length", max_length=64)``
    and ``get_*_features``. Traps: padding=True (CLIP_benchmark #108, #135) and a centre crop."""
    folder = request.getfixturevalue({"siglip": "siglip_sp_dir", "siglip2": "siglip2_dir"}[kind])
    images = non_square_images()
    adapter, pixels, got_img, got_txt = adapter_features(folder, images)
    model, processor = model_and_processor(folder)
    inputs = processor(text=PROMPTS, images=images, padding="max_length", max_length=64, return_tensors="pt")
    assert inputs["input_ids"].shape == (len(PROMPTS), 64)
    torch.testing.assert_close(pixels, inputs["pixel_values"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got_img, image_features(model, {"pixel_values": inputs["pixel_values"]}), **TOL)
    text_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
    torch.testing.assert_close(got_txt, text_features(model, text_inputs), **TOL)
    assert adapter.metadata["text"]["padding"] == "max_length" and adapter.metadata["text"]["max_length"] == 64

    # Trap 1: prompts padded to the longest one give other text features.
    longest = processor.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    assert longest["input_ids"].shape[1] < 64
    assert differs(got_txt, text_features(model, longest))
    # Trap 2: CLIP's resize-the-shortest-side-and-centre-crop, with SigLIP's mean and std.
    crop = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    cropped = crop(images=images, return_tensors="pt")["pixel_values"]
    assert not torch.allclose(pixels, cropped, atol=1e-2)
    assert differs(got_img, image_features(model, {"pixel_values": cropped}))


def test_siglip_sentencepiece_tokenizer_is_siglips(siglip_sp_dir):
    """The sentencepiece fixture really is SigLIP's tokenizer class, read back by AutoTokenizer."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(siglip_sp_dir)
    assert type(tokenizer).__name__ == "SiglipTokenizer" and tokenizer.model_max_length == 64


@pytest.mark.parametrize("kind", ["siglip", "siglip2"])
def test_siglip_ranking_is_the_models_own_and_the_record_says_scale_and_bias(
    kind, request, imagefolder_root, tmp_path
):
    """evalbench scores zero-shot by cosine; the model's ``logits_per_image`` (scale * cos + bias,
    then a sigmoid) rank the same. The record names the scale and bias it did not apply."""
    folder = request.getfixturevalue({"siglip": "siglip_sp_dir", "siglip2": "siglip2_dir"}[kind])
    write_task(tmp_path, "colours-one", {"source": "imagefolder", "path": str(imagefolder_root)},
               templates=["a photo of {c}."])  # fmt: skip
    assert evalbench.cli.main([
        "-q", "run", "--model", f"sig=hf:{folder}", "--tasks", "colours-one", "--tasks-dir", str(tmp_path),
        "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
        "--mode", "zeroshot", "--no-progress", "--device", "cpu",
    ]) == 0  # fmt: skip
    record = json.loads((tmp_path / "results" / "sig" / "colours-one.json").read_text())
    pred, _ = unpack_predictions(record["results"]["zeroshot"]["per_sample"])
    files = sorted((imagefolder_root / "test").glob("*/*.png"))
    model, processor = model_and_processor(folder)
    inputs = processor(text=[f"a photo of {c}." for c in CLASSES], images=[Image.open(f).convert("RGB") for f in files],
                       padding="max_length", max_length=64, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        probs = torch.sigmoid(model(**inputs).logits_per_image)
    np.testing.assert_array_equal(pred, probs.argmax(dim=1).numpy())
    adapter = record["model"]["adapter"]
    assert adapter["class"] == "SiglipModel"
    assert adapter["logit_scale"] == pytest.approx(7.0) and adapter["logit_bias"] == pytest.approx(-12.5)
    tokenizer = {"siglip": "SiglipTokenizer", "siglip2": "Siglip2Tokenizer"}[kind]
    assert adapter["text"] == {"tokenizer": tokenizer, "padding_side": processor.tokenizer.padding_side,
                               "padding": "max_length", "truncation": True, "max_length": 64}  # fmt: skip
    assert adapter["image_processor"]["size"] == {"height": 32, "width": 32}
    assert not adapter["image_processor"].get("do_center_crop")


def test_siglip2_naflex_matches_its_processor(naflex_dir):
    """Siglip2Model: each image's own patch grid (aspect ratio kept), its patch mask, and text
    padded to 64 as Siglip2Processor does by default."""
    images = non_square_images()
    adapter, _, got_img, got_txt = adapter_features(naflex_dir, images)
    model, processor = model_and_processor(naflex_dir)
    inputs = processor(text=PROMPTS, images=images, return_tensors="pt")
    assert inputs["input_ids"].shape == (len(PROMPTS), 64)
    assert inputs["spatial_shapes"].unique(dim=0).shape[0] == 2  # wide and tall images: two grids
    assert not bool(inputs["pixel_attention_mask"].all())  # some patch slots are padding
    image_inputs = {k: inputs[k] for k in ("pixel_values", "pixel_attention_mask", "spatial_shapes")}
    torch.testing.assert_close(got_img, image_features(model, image_inputs), **TOL)
    torch.testing.assert_close(got_txt, text_features(model, {"input_ids": inputs["input_ids"],
                                                              "attention_mask": inputs["attention_mask"]}), **TOL)  # fmt: skip
    assert adapter.metadata["class"] == "Siglip2Model" and adapter.metadata["image_processor"]["max_num_patches"] == 256


def test_clip_matches_its_documented_pipeline(clip_dir):
    """CLIPModel: ``CLIPProcessor(text=..., images=..., padding=True)``. Trap: squashing a
    non-square image to the square instead of resizing its shortest side and centre-cropping."""
    images = non_square_images()
    adapter, pixels, got_img, got_txt = adapter_features(clip_dir, images)
    model, processor = model_and_processor(clip_dir)
    inputs = processor(text=PROMPTS, images=images, padding=True, return_tensors="pt")
    torch.testing.assert_close(pixels, inputs["pixel_values"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got_img, image_features(model, {"pixel_values": inputs["pixel_values"]}), **TOL)
    text_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    torch.testing.assert_close(got_txt, text_features(model, text_inputs), **TOL)
    assert adapter.metadata["text"]["padding"] is True and adapter.metadata["class"] == "CLIPModel"
    squash = transformers.SiglipImageProcessor(
        size={"height": 32, "width": 32}, image_mean=processor.image_processor.image_mean,
        image_std=processor.image_processor.image_std, resample=processor.image_processor.resample,
    )  # fmt: skip
    squashed = squash(images=images, return_tensors="pt")["pixel_values"]
    assert not torch.allclose(pixels, squashed, atol=1e-2)
    assert differs(got_img, image_features(model, {"pixel_values": squashed}))
