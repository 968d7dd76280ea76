"""open_clip models: ``ARCH``, ``ARCH@TAG``, ``ARCH@PATH``; ARCH may be a model-config JSON file."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from importlib.metadata import version
from pathlib import Path

import torch

from evalbench.errors import EvalbenchError
from evalbench.hub import hub_offline, is_offline_error
from evalbench.models.base import ModelSpec, logit_metadata
from evalbench.models.checkpoint import CHECKPOINT_SUFFIXES, file_digest, load_into, read_state_dict, skip_init
from evalbench.models.hub import resolve_file

log = logging.getLogger(__name__)


def _register_arch(arch: str) -> str:
    """The open_clip model name for ``arch``: registers a config JSON path under its file stem."""
    import open_clip

    if arch.endswith(".json"):
        path = Path(arch)
        if not path.is_file():
            raise EvalbenchError(f"--model: model config not found: {path}")
        open_clip.add_model_config(path)
        return path.stem
    if arch not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if arch.lower() in m.lower()][:5]
        hint = f" (did you mean: {', '.join(close)}?)" if close else " (see `evalbench models list`)"
        raise EvalbenchError(f"--model: unknown open_clip architecture '{arch}'{hint}")
    return arch


def _is_path(weights: str) -> bool:
    return weights.endswith(CHECKPOINT_SUFFIXES) or "/" in weights or Path(weights).exists()




def _config_file(arch: str) -> Path | None:
    """The JSON file defining ``arch``, found without importing open_clip (3 s): a path, or one of
    the configs open_clip ships. None for architectures only open_clip itself can resolve."""
    if arch.endswith(".json"):
        return Path(arch) if Path(arch).is_file() else None
    found = importlib.util.find_spec("open_clip")
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(found.submodule_search_locations[0]) / "model_configs" / f"{arch}.json"
    return path if path.is_file() else None


def fingerprint(spec: ModelSpec) -> str:
    """Identity of the weights and architecture, computed without building the model; raises
    EvalbenchError for an unknown architecture or tag, a missing checkpoint, or a tag whose
    weights are neither cached nor reachable. For local weights it reads the config file (its
    ``preprocess_cfg`` included) and hashes the weights without importing open_clip, so that a
    fully cached rerun stays fast. For ``ARCH@TAG``: the architecture config, the tag's pretrained
    config (its preprocessing) and the weights file as resolved (see ``_tag_weights``).
    open_clip's version is not part of it but of the cache keys (``code_version``)."""
    arch, _, weights = spec.target.partition("@")
    config = _config_file(arch)
    if weights and _is_path(weights) and config is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EvalbenchError(f"--model: checkpoint not found: {path}")
        config_digest = hashlib.sha256(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
        return f"{config_digest.hexdigest()[:16]}-{file_digest(path)}"
    import open_clip

    model_name = _register_arch(arch)
    config_digest = hashlib.sha256(repr(open_clip.get_model_config(model_name)).encode()).hexdigest()[:16]
    if weights and _is_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EvalbenchError(f"--model: checkpoint not found: {path}")
        return f"{config_digest}-{file_digest(path)}"
    if weights:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if weights not in tags:
            raise EvalbenchError(
                f"--model: unknown pretrained tag '{weights}' for {model_name} (known: {', '.join(tags) or 'none'})"
            )
        # The tag's pretrained config carries its preprocessing (mean, std, resize mode,
        # interpolation) and QuickGELU flag; the architecture config, the image size.
        pretrained_cfg = open_clip.get_pretrained_cfg(model_name, weights)
        identity = {
            "tag": f"{model_name}@{weights}",
            "config": config_digest,
            "pretrained_cfg": pretrained_cfg,
            "weights": _tag_weights(spec, pretrained_cfg),
            "build": tag_build_options(model_name, weights),  # QuickGELU where open_clip only warns
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{config_digest}-random0"


def _tag_weights(spec: ModelSpec, cfg: dict) -> str:
    """The identity of the file open_clip loads for a pretrained tag, resolved as open_clip
    resolves it (``download_pretrained``: the hub file, a safetensors alternative first, else the
    URL): the hub file's etag (its content), or the digest of the downloaded or named file.
    Raises EvalbenchError when the hub file is neither in the local cache nor reachable."""
    if cfg.get("file"):
        return file_digest(Path(cfg["file"]))
    if cfg.get("hf_hub"):
        import open_clip.pretrained as pretrained

        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or pretrained.HF_WEIGHTS_NAME
        safe = getattr(pretrained, "_get_safe_alternatives", lambda name: ())
        candidates = [*safe(filename), filename] if getattr(pretrained, "_has_safetensors", True) else [filename]
        for candidate in candidates:
            found = resolve_file(repo_id, candidate)
            if found is not None:
                return f"{repo_id}/{candidate}:{found.content}"
        if hub_offline():
            raise EvalbenchError(_offline_message(spec))
        raise EvalbenchError(
            f"--model: {spec.target}: its weights file {repo_id}/{filename} cannot be found on the hub"
        )
    url = cfg.get("url", "")
    downloaded = Path("~/.cache/clip").expanduser() / os.path.basename(url)  # open_clip's download folder
    return f"{url}:{file_digest(downloaded)}" if url and downloaded.is_file() else url


def _offline_message(spec: ModelSpec) -> str:
    return (
        f"--model: {spec.target}: weights are not in the local cache and the hub cannot be reached "
        "(offline). Run once with network access, unset HF_HUB_OFFLINE, or pass ARCH@/path/to/weights."
    )


def open_clip_version() -> str:
    """The installed open_clip's version, read without importing it (3 s)."""
    return version("open_clip_torch")


# Bump when a change to this adapter changes the embeddings it returns for the same weights, so
# that features and text classifiers cached by older code are not reused.
ADAPTER_VERSION = 2  # 2: QuickGELU for tags trained with it; SigLIP 2 NaFlex


def code_version() -> str:
    """What besides the weights decides the embeddings: open_clip's version (model code, default
    preprocessing, tokenizer) and this adapter's. Part of every cache key, not of the record's
    model fingerprint (the record's provenance names the versions)."""
    return f"open_clip_torch=={open_clip_version()};adapter={ADAPTER_VERSION}"


def tag_build_options(model_name: str, tag: str) -> dict:
    """Arguments to ``open_clip.create_model_and_transforms(model_name, pretrained=tag, ...)`` that
    the tag's own pipeline needs and open_clip 3 does not apply by itself.

    A tag trained with QuickGELU (every ``openai`` tag, the ``-quickgelu`` DFN/MetaCLIP ones) on an
    architecture whose config says GELU: open_clip only warns ("QuickGELU mismatch") and builds
    GELU, which loads the weights without error and loses points (open_clip #1109); the model the
    weights were trained as has QuickGELU. The tag's preprocessing (mean/std, resize mode,
    interpolation) needs nothing here: open_clip's factory merges the tag's config itself.
    """
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    model_cfg = open_clip.get_model_config(model_name) or {}
    if tag_cfg.get("quick_gelu", False) and not model_cfg.get("quick_gelu", False):
        return {"force_quick_gelu": True}
    return {}


@contextlib.contextmanager
def _without_random_weights_warning():
    """open_clip warns on the root logger that a model built without a pretrained tag has random
    weights; for ARCH@PATH that is untrue, so its WARNING lines are held back meanwhile."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class ModuleAdapter:
    """An open_clip-style module already in memory (``encode_image``, ``encode_text``) with its
    tokenizer and preprocessing, as a :class:`~evalbench.models.base.ModelAdapter`; the in-training
    evaluator wraps the model being trained in one. Texts can be tokenized once
    (:meth:`tokenize`) and encoded many times (:meth:`encode_tokens`)."""

    def __init__(self, model, tokenizer, preprocess, device: torch.device, spec: ModelSpec | None = None):
        self.model, self.tokenizer, self.preprocess, self.device = model, tokenizer, preprocess, device
        self.spec = spec or ModelSpec(name="in-memory", spec="in-memory", family="open_clip", target="in-memory")
        self.fingerprint = None

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device, non_blocking=True)).float()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens.to(self.device)).float()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(texts))


class OpenClipAdapter(ModuleAdapter):
    def __init__(self, spec: ModelSpec, device: torch.device):
        import open_clip

        self.spec = spec
        self.device = device
        self.fingerprint = fingerprint(spec)
        arch, _, weights = spec.target.partition("@")
        model_name = _register_arch(arch)
        if weights and _is_path(weights):
            path = Path(weights).expanduser()
            state = read_state_dict(path)
            # The weights are loaded just below (strictly), so neither the random initialisation
            # nor open_clip's warning that the model has random weights applies.
            with _without_random_weights_warning(), skip_init():
                model, _, self.preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
            load_into(model, state, path)
        elif weights:
            options = tag_build_options(model_name, weights)
            try:
                model, _, self.preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=weights, **options
                )
            except Exception as e:  # noqa: BLE001
                if is_offline_error(e):
                    raise EvalbenchError(_offline_message(spec)) from None
                raise
            # After loading, so that a tag's weights resolve to the file just downloaded.
            self.fingerprint = fingerprint(spec)
        else:
            log.warning("model %s has random weights (no @TAG or @PATH): numbers are meaningless", spec.name)
            torch.manual_seed(0)  # random weights, but the same ones every run
            model, _, self.preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
        self.model = model.to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.metadata = _metadata(model, model_name, weights)


Adapter = OpenClipAdapter


def _metadata(model, model_name: str, weights: str) -> dict:
    """What the record says about how this model was run: the activation, the image preprocessing
    config open_clip resolved (the tag's own), and the logit scale and bias, which zero-shot does
    not apply (cosine scores; a positive scale and a bias do not change the ranking)."""
    quick_gelu = any(type(m).__name__ == "QuickGELU" for m in model.modules())
    preprocess = getattr(model.visual, "preprocess_cfg", None) or {}
    return {
        "family": "open_clip",
        "architecture": model_name,
        "pretrained": weights or None,
        "quick_gelu": quick_gelu,
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess.items()},
        **logit_metadata(getattr(model, "logit_scale", None), getattr(model, "logit_bias", None)),
    }


def list_models(pattern: str | None = None) -> list[tuple[str, list[str]]]:
    """(architecture, pretrained tags) pairs, optionally filtered by an fnmatch pattern."""
    import fnmatch

    import open_clip

    names = open_clip.list_models()
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return [(n, open_clip.list_pretrained_tags_by_model(n)) for n in names]
