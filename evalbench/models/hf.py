"""Hugging Face ``transformers`` models: ``hf:ID_OR_DIR`` and ``hf:ID_OR_DIR@STATE_DICT``.

``ID_OR_DIR`` is a hub id (``openai/clip-vit-base-patch32``) or a local ``save_pretrained``
folder holding the model, its tokenizer and its image processor. ``@STATE_DICT`` loads a
fine-tuned state_dict file (``.pt``/``.pth``/``.bin``/``.safetensors``) over that base model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from evalbench.errors import EvalbenchError
from evalbench.hub import hub_offline, is_offline_error
from evalbench.models.base import ModelSpec, logit_metadata
from evalbench.models.checkpoint import file_digest, load_into, read_state_dict
from evalbench.models.hub import resolve_file

log = logging.getLogger(__name__)

# config.model_type -> transformers class. Other types go through AutoModel, untested.
MODEL_CLASSES = {
    "clip": "CLIPModel",
    "siglip": "SiglipModel",  # SigLIP, and SigLIP 2 at a fixed resolution (google/siglip2-*-224)
    "siglip2": "Siglip2Model",  # SigLIP 2 NaFlex (google/siglip2-*-naflex)
    "vision-text-dual-encoder": "VisionTextDualEncoderModel",
}
# SigLIP (1 and 2) was trained on prompts padded to a fixed length (64) and pools the last
# position, so padding to the longest prompt of a batch changes its text embeddings (and cost
# CLIP_benchmark two points of ImageNet accuracy, its issues #108 and #135).
FIXED_LENGTH_TYPES = {"siglip", "siglip2"}
# Image processors whose output is more than ``pixel_values`` (NaFlex: patches, a patch mask and
# the patch grid's shape); their outputs travel packed in one tensor, see PackedImageInputs.
PACKED_INPUT_TYPES = {"siglip2"}

# The image processor settings a record shows (the ones that change pixels).
_IMAGE_SETTINGS = ("image_processor_type", "do_resize", "size", "resample", "do_center_crop", "crop_size",
                   "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb",
                   "patch_size", "max_num_patches")

_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SMALL_SUFFIXES = (".json", ".txt", ".model")  # configs, vocabularies, sentencepiece models


@dataclass(frozen=True)
class HFTarget:
    """What an ``hf:`` spec names: a hub id or local folder, and an optional state_dict file."""

    source: str
    local: bool
    state_dict: Path | None


def parse_target(target: str) -> HFTarget:
    """``ID_OR_DIR[@STATE_DICT]`` -> HFTarget; raises EvalbenchError for a missing folder or file."""
    source, state = target, None
    if "@" in target and not Path(target).expanduser().is_dir():  # a folder may itself contain '@'
        source, _, state = target.rpartition("@")
    if not source:
        raise EvalbenchError(f"--model: hf:{target}: empty model id or folder")
    folder = Path(source).expanduser()
    local = folder.is_dir()
    if not local and (source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source):
        raise EvalbenchError(f"--model: hf:{target}: folder not found: {folder}")
    state_path = Path(state).expanduser() if state else None
    if state_path is not None and not state_path.is_file():
        raise EvalbenchError(f"--model: hf:{target}: checkpoint not found: {state_path}")
    return HFTarget(str(folder) if local else source, local, state_path)


def _folder_digest(folder: Path) -> str:
    """Digest of the files ``from_pretrained`` reads: configs, vocabularies and the weights
    (safetensors where there are any, else .bin). Other formats' weights are not hashed."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    weights = [p for p in files if p.suffix == ".safetensors"] or [p for p in files if p.suffix == ".bin"]
    small = [p for p in files if p.suffix in _SMALL_SUFFIXES]
    if not weights:
        raise EvalbenchError(f"--model: {folder}: no model weights (*.safetensors or *.bin) in the folder")
    h = hashlib.sha256()
    for p in small + weights:
        h.update(f"{p.name}:{file_digest(p)}\n".encode())
    return h.hexdigest()[:16]


def _not_cached_message(source: str) -> str:
    return (
        f"--model: hf:{source}: the weights are not in the local Hugging Face cache and the hub cannot be "
        "reached (offline). Run once with network access (unset HF_HUB_OFFLINE) to cache them, or pass a "
        "local save_pretrained folder: hf:/path/to/folder"
    )


def fingerprint(spec: ModelSpec) -> str:
    """Identity of the weights without loading them: a local folder's config and weight-file
    digests, or a hub id with the commit a download resolves now (asked of the hub when online,
    else that of the locally cached snapshot; never a branch name such as ``main``); plus the
    state_dict file's digest. Raises EvalbenchError for missing files, a hub model not cached
    while offline, or one whose commit cannot be resolved."""
    target = parse_target(spec.target)
    if target.local:
        base = _folder_digest(Path(target.source))
    else:
        found = resolve_file(target.source, "config.json")
        if found is None and hub_offline():
            raise EvalbenchError(_not_cached_message(target.source))
        if found is None:
            raise EvalbenchError(
                f"--model: hf:{target.source}: cannot resolve its commit: no config.json on the hub, or a gated or "
                "private repository (log in with `hf auth login`), and no copy in the local Hugging Face cache"
            )
        base = f"{target.source}@{found.commit}"
    extra = file_digest(target.state_dict) if target.state_dict else ""
    return hashlib.sha256(f"hf:{base}:{extra}".encode()).hexdigest()[:16]


# Bump when a change to this adapter changes the embeddings it returns for the same weights
# (tokenizer arguments, image processing), so that cached features are not reused.
ADAPTER_VERSION = 2  # 2: QuickGELU for tags trained with it; SigLIP 2 NaFlex


def code_version() -> str:
    """What besides the weights decides the embeddings: transformers' version (model code,
    tokenizers, image processors) and this adapter's. Part of every cache key."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("transformers")
    except PackageNotFoundError:  # hf: models cannot load then; the key is never used
        installed = "none"
    return f"transformers=={installed};adapter={ADAPTER_VERSION}"



def _from_pretrained(what: str, load, source: str):
    """Call ``load()``; turn hub, offline and remote-code failures into one-line EvalbenchErrors."""
    try:
        return load()
    except EvalbenchError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers raises OSError/ValueError for user mistakes
        if is_offline_error(e):
            raise EvalbenchError(_not_cached_message(source)) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "trust_remote_code" in str(e):
            raise EvalbenchError(
                f"--model: hf:{source}: its {what} needs code from the repository; pass --trust-remote-code "
                "if you trust it"
            ) from None
        # ImportError: a tokenizer whose backend is missing (SigLIP's needs sentencepiece, protobuf)
        if isinstance(e, ImportError):
            first = first.split(". ")[0] + ". pip install 'evalbench[hf]' installs what hf: models need"
        if isinstance(e, (OSError, ValueError, KeyError, ImportError)):
            raise EvalbenchError(f"--model: hf:{source}: cannot load its {what}: {first[:300]}") from None
        raise


@contextlib.contextmanager
def _quiet_loading():
    """Hide transformers' per-tensor "Loading weights" bar (library code shows no bars of its own
    making; downloads keep huggingface_hub's)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class ImageProcessorTransform:
    """PIL image -> (C, H, W) tensor with a transformers image processor. A plain object, so that
    DataLoader workers can pickle it."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]


class PackedImageInputs:
    """PIL image -> one (P, D + 3) tensor for a NaFlex image processor, whose outputs per image are
    ``pixel_values`` (P, D) patches, ``pixel_attention_mask`` (P,) and ``spatial_shapes`` (2,).

    The feature pipeline batches one tensor per image, so the mask and the patch grid's height and
    width ride along as three more columns (exact in float32: they are small integers);
    :meth:`unpack` turns a batch back into the model's keyword arguments.
    """

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        out = self.image_processor(images=image, return_tensors="pt")
        patches, mask, shape = out["pixel_values"][0], out["pixel_attention_mask"][0], out["spatial_shapes"][0]
        extra = torch.cat([mask[:, None].float(), shape.float().expand(len(mask), 2)], dim=1)
        return torch.cat([patches.float(), extra], dim=1)

    @staticmethod
    def unpack(packed: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": packed[..., :-3],
            "pixel_attention_mask": packed[..., -3].round().long(),
            "spatial_shapes": packed[:, 0, -2:].round().long(),
        }


def _embedding(out) -> torch.Tensor:
    """transformers 4 returns a tensor from get_*_features; 5 returns an output object whose
    ``pooler_output`` holds the projected embedding."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise EvalbenchError(f"--model: get_*_features returned {type(out).__name__} without a pooler_output")
    return pooled


class HFAdapter:
    """An adapter over a transformers dual encoder with ``get_image_features`` / ``get_text_features``."""

    def __init__(self, spec: ModelSpec, device: torch.device, trust_remote_code: bool = False):
        try:
            import transformers
        except ImportError:
            raise EvalbenchError("--model: hf: models need transformers: pip install 'evalbench[hf]'") from None

        self.spec, self.device = spec, device
        target = parse_target(spec.target)
        source, remote = target.source, {"trust_remote_code": trust_remote_code}
        config = _from_pretrained("config", lambda: transformers.AutoConfig.from_pretrained(source, **remote), source)
        self.model_type = config.model_type
        class_name = MODEL_CLASSES.get(config.model_type)
        if class_name is None:
            log.warning("hf:%s: model_type '%s' is not one evalbench tests; loading it with AutoModel",
                        source, config.model_type)
            cls, kwargs = transformers.AutoModel, remote
        else:
            cls, kwargs = getattr(transformers, class_name), {}
        with _quiet_loading():
            model = _from_pretrained(
                "weights", lambda: cls.from_pretrained(source, config=config, dtype=torch.float32, **kwargs), source
            )
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(model, method, None)):
                name = type(model).__name__
                raise EvalbenchError(f"--model: hf:{source}: {name} has no {method}: not a dual encoder")
        if target.state_dict is not None:
            load_into(model, read_state_dict(target.state_dict), target.state_dict)
        # After loading, so that a hub id resolves to the commit just downloaded.
        self.fingerprint = fingerprint(spec)
        self.model = model.to(device).eval()
        self.tokenizer = _from_pretrained(
            "tokenizer", lambda: transformers.AutoTokenizer.from_pretrained(source, **remote), source
        )
        image_processor = _from_pretrained(
            "image processor", lambda: transformers.AutoImageProcessor.from_pretrained(source, **remote), source
        )
        packed = self.model_type in PACKED_INPUT_TYPES
        self.preprocess = PackedImageInputs(image_processor) if packed else ImageProcessorTransform(image_processor)
        self.text_kwargs = self._text_kwargs(config)
        self.metadata = self._metadata(image_processor)

    def _text_kwargs(self, config) -> dict:
        """Tokenizer arguments: SigLIP pads to its fixed length; the others pad to the longest
        prompt. Both truncate to what the text tower's position embeddings allow."""
        text_config = getattr(config, "text_config", config)
        limits = [getattr(text_config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        max_length = min(n for n in limits if isinstance(n, int) and n > 0) if any(limits) else None
        padding = "max_length" if self.model_type in FIXED_LENGTH_TYPES else True
        if padding == "max_length" and max_length is None:
            raise EvalbenchError(f"--model: {self.spec.spec}: cannot tell the text length SigLIP was trained with")
        return {"padding": padding, "truncation": True, "max_length": max_length}

    def _metadata(self, image_processor) -> dict:
        """What the record says about how this model was run: its class, the tokenizer arguments,
        the image processor's settings, and the logit scale and bias zero-shot does not apply."""
        settings = json.loads(image_processor.to_json_string())
        return {
            "family": "hf",
            "class": type(self.model).__name__,
            "model_type": self.model_type,
            "text": {
                "tokenizer": type(self.tokenizer).__name__,
                "padding_side": getattr(self.tokenizer, "padding_side", None),
                **self.text_kwargs,
            },
            "image_processor": {k: settings[k] for k in _IMAGE_SETTINGS if k in settings},
            **logit_metadata(getattr(self.model, "logit_scale", None), getattr(self.model, "logit_bias", None)),
        }

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, non_blocking=True)
        if isinstance(self.preprocess, PackedImageInputs):
            out = self.model.get_image_features(**PackedImageInputs.unpack(pixels))
        else:
            out = self.model.get_image_features(pixel_values=pixels)
        return _embedding(out).float()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, return_tensors="pt", **self.text_kwargs).to(self.device)
        return _embedding(self.model.get_text_features(**tokens)).float()


Adapter = HFAdapter
