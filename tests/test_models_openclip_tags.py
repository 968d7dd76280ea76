"""open_clip ``ARCH@TAG``: evalbench builds the model and preprocessing the tag was published with.

No weights can be downloaded here, so open_clip's download step is replaced by a local file (or
a loader of seeded random weights), and what evalbench builds is compared with a reference put
together from open_clip's own parts: the architecture built with ``pretrained=None``, the tag's
pretrained config (``open_clip.get_pretrained_cfg``) turned into a transform by
``open_clip.image_transform``. Each known trap has a test that fails if evalbench fell into it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import evalbench.cli
from evalbench.models import load_model, model_fingerprint, parse_model_spec
from evalbench.models.openclip import tag_build_options

CPU = torch.device("cpu")
PROMPTS = ["a photo of a red square.", "a photo of a green circle.", "a blue thing"]


def non_square_images(size: tuple[int, int], n: int = 4) -> list[Image.Image]:
    """Seeded images, wider or taller than square, with structure near the borders, so that
    squashing, centre-cropping and the interpolation each give different pixels."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        w, h = size if i % 2 == 0 else size[::-1]
        ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
        noise = rng.normal(0, 60, (h, w, 3))
        images.append(Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8)))
    return images


def _reference_transform(model_name: str, tag: str, size: int):
    """open_clip's eval transform from the tag's pretrained config, built without the factory."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    return open_clip.image_transform(
        size, is_train=False, mean=cfg["mean"], std=cfg["std"],
        resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"],
    )  # fmt: skip


@pytest.fixture
def seeded_weights(monkeypatch):
    """Stand-ins for open_clip's download and load: ``download_pretrained`` returns a dummy path,
    ``load_checkpoint`` loads the state_dict registered for the architecture (strictly)."""
    import open_clip.factory

    states: dict[str, dict] = {}
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: "weights.pt")

    def load_checkpoint(model, path, strict=True, **kwargs):
        assert path == "weights.pt"
        return model.load_state_dict(states[type(model.visual).__name__ + str(model.visual.output_dim)], strict=strict)

    monkeypatch.setattr(open_clip.factory, "load_checkpoint", load_checkpoint)
    # The fingerprint resolves the tag's weights file on the hub (tests/test_cache_keys.py tests
    # that); here every tag resolves to one stand-in file.
    import evalbench.models.openclip as adapter

    monkeypatch.setattr(adapter, "_tag_weights", lambda spec, cfg: "stand-in-weights")
    return states


def test_openai_tag_builds_quick_gelu_as_trained(seeded_weights):
    """``ViT-B-32@openai``: open_clip 3's ``create_model_and_transforms('ViT-B-32', pretrained='openai')``
    only warns about the QuickGELU mismatch and builds GELU; the weights were trained with
    QuickGELU (``ViT-B-32-quickgelu``), and evalbench builds that model, with the tag's transform."""
    import open_clip

    assert open_clip.get_pretrained_cfg("ViT-B-32", "openai")["quick_gelu"] is True
    assert not open_clip.get_model_config("ViT-B-32").get("quick_gelu", False)
    assert tag_build_options("ViT-B-32", "openai") == {"force_quick_gelu": True}
    assert tag_build_options("ViT-B-32", "laion2b_s34b_b79k") == {}  # trained with GELU

    torch.manual_seed(7)
    reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    seeded_weights[type(reference.visual).__name__ + str(reference.visual.output_dim)] = reference.state_dict()
    adapter = load_model(parse_model_spec("ViT-B-32@openai"), CPU)

    activations = {type(m).__name__ for m in adapter.model.transformer.modules()} & {"GELU", "QuickGELU"}
    assert activations == {"QuickGELU"}
    assert adapter.metadata["quick_gelu"] is True and adapter.metadata["preprocess"]["resize_mode"] == "shortest"

    images = non_square_images((300, 200), n=2)
    transform = _reference_transform("ViT-B-32", "openai", 224)
    pixels = torch.stack([adapter.preprocess(img) for img in images])
    torch.testing.assert_close(pixels, torch.stack([transform(img) for img in images]), rtol=0, atol=0)
    # One image and two prompts: a ViT-B-32 forward pass costs seconds on a shared CPU.
    pixels, prompts = pixels[:1], PROMPTS[:2]
    tokens = open_clip.get_tokenizer("ViT-B-32")(prompts)
    with torch.no_grad():
        want_img, want_txt = reference.encode_image(pixels), reference.encode_text(tokens)
        torch.testing.assert_close(adapter.encode_images(pixels), want_img, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(adapter.encode_texts(prompts), want_txt, rtol=1e-4, atol=1e-5)
        # The trap: the same weights in a GELU model (what open_clip builds for 'ViT-B-32' +
        # 'openai' without force_quick_gelu) give other features.
        for block in reference.transformer.resblocks:
            block.mlp.gelu = torch.nn.GELU()
        assert not torch.allclose(reference.encode_text(tokens), want_txt, atol=1e-3)


# A tiny architecture with two made-up tags, as open_clip's pretrained registry would list them:
# one squashes with bilinear interpolation and SigLIP's mean/std, one resizes the shortest side,
# centre-crops, and was trained with QuickGELU.
TAGS = {
    "squash": dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", resize_mode="squash"),
    "crop_qg": dict(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
                    interpolation="bicubic", resize_mode="shortest", quick_gelu=True),
}  # fmt: skip


@pytest.fixture
def tiny_tags(tiny_arch, seeded_weights, monkeypatch):
    import open_clip
    import open_clip.pretrained

    open_clip.add_model_config(tiny_arch)
    registry = {**open_clip.pretrained._PRETRAINED, tiny_arch.stem: {t: {"hf_hub": "x/y/", **c} for t, c in TAGS.items()}}
    monkeypatch.setattr(open_clip.pretrained, "_PRETRAINED", registry)
    torch.manual_seed(11)
    reference = open_clip.create_model(tiny_arch.stem, pretrained=None, force_quick_gelu=True).eval()
    seeded_weights[type(reference.visual).__name__ + str(reference.visual.output_dim)] = reference.state_dict()
    return tiny_arch, reference


@pytest.mark.parametrize("tag", list(TAGS))
def test_tag_preprocessing_is_the_tags_own(tag, tiny_tags):
    """mean/std, resize mode and interpolation come from the tag's config, not the architecture's
    defaults; on non-square images each resize mode gives other pixels, so falling back to the
    default (shortest side + centre crop, bicubic) or to the other tag's config fails here."""
    arch, _ = tiny_tags
    adapter = load_model(parse_model_spec(f"{arch}@{tag}"), CPU)
    images = non_square_images((48, 32))
    got = torch.stack([adapter.preprocess(img) for img in images])
    want = torch.stack([_reference_transform(arch.stem, tag, 32)(img) for img in images])
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    other = next(t for t in TAGS if t != tag)
    assert not torch.allclose(got, torch.stack([_reference_transform(arch.stem, other, 32)(img) for img in images]))
    assert adapter.metadata["preprocess"]["resize_mode"] == TAGS[tag]["resize_mode"]
    assert adapter.metadata["preprocess"]["interpolation"] == TAGS[tag]["interpolation"]


def test_quick_gelu_tag_on_a_gelu_architecture(tiny_tags):
    """The tag that says QuickGELU gets it (features equal the QuickGELU reference); the other tag
    of the same architecture keeps GELU; the two are cached under different model keys."""
    arch, reference = tiny_tags
    qg = load_model(parse_model_spec(f"{arch}@crop_qg"), CPU)
    plain = load_model(parse_model_spec(f"{arch}@squash"), CPU)
    assert qg.metadata["quick_gelu"] is True and plain.metadata["quick_gelu"] is False
    import open_clip

    tokens = open_clip.get_tokenizer(arch.stem)(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(qg.encode_texts(PROMPTS), reference.encode_text(tokens), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(plain.encode_texts(PROMPTS), reference.encode_text(tokens), atol=1e-3)
    fingerprints = {model_fingerprint(parse_model_spec(f"{arch}@{t}")) for t in TAGS}
    assert len(fingerprints) == 2


def test_record_names_the_preprocessing_and_activation(tiny_tags, imagefolder_root, tmp_path):
    """The record's model section says how the model was run (written from the loaded adapter)."""
    from conftest import write_task

    arch, reference = tiny_tags
    write_task(tmp_path, "colours", {"source": "imagefolder", "path": str(imagefolder_root)})
    args = ["-q", "run", "--model", f"qg={arch}@crop_qg", "--tasks", "colours", "--tasks-dir", str(tmp_path),
            "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
            "--mode", "zeroshot", "--no-progress", "--device", "cpu"]  # fmt: skip
    assert evalbench.cli.main(args) == 0
    record = json.loads((tmp_path / "results" / "qg" / "colours.json").read_text())
    adapter = record["model"]["adapter"]
    assert record["provenance"]["model_loaded"] is True
    assert adapter["family"] == "open_clip" and adapter["pretrained"] == "crop_qg" and adapter["quick_gelu"] is True
    assert adapter["preprocess"]["mean"] == pytest.approx(list(TAGS["crop_qg"]["mean"]))
    assert adapter["logit_scale"] == pytest.approx(float(reference.logit_scale.detach().exp()))
    assert adapter["logit_bias"] is None
    # A rerun served from the cache never loads the model: the record keeps what it said.
    assert evalbench.cli.main([*args, "--overwrite"]) == 0
    again = json.loads((tmp_path / "results" / "qg" / "colours.json").read_text())
    assert again["provenance"]["model_loaded"] is False and again["model"]["adapter"] == adapter
