"""Zero-shot classification: a text classifier from class names and prompt templates."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from evalbench.models.base import ModelAdapter


def fill_template(template: str, classname: str) -> str:
    """Put a class name into a template. Plain replacement: a template is never evaluated."""
    return template.replace("{c}", classname)


@torch.inference_mode()
def build_zeroshot_classifier(
    model: ModelAdapter, classnames: list[str], templates: list[str], batch_size: int = 256, progress: bool = True
) -> torch.Tensor:
    """A (dim, n_classes) matrix: per class, the mean of its L2-normalised template embeddings,
    renormalised. Prompts are encoded in batches of whole classes."""
    per_batch = max(1, batch_size // len(templates))
    columns = []
    batches = range(0, len(classnames), per_batch)
    for start in tqdm(batches, desc="text classifier", unit="batch", disable=not progress, leave=False):
        names = classnames[start : start + per_batch]
        prompts = class_prompts(names, templates)
        columns.append(class_embeddings(model.encode_texts(prompts), len(names)))
    return torch.cat(columns).T.contiguous()


def class_prompts(classnames: list[str], templates: list[str]) -> list[str]:
    """Every template filled with every class name, class by class (the order
    :func:`class_embeddings` expects)."""
    return [fill_template(t, c) for c in classnames for t in templates]


def class_embeddings(prompt_embeddings: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n_classes, dim): per class, the mean of its L2-normalised prompt embeddings (rows of
    ``prompt_embeddings``, class by class as :func:`class_prompts` orders them), renormalised."""
    emb = F.normalize(prompt_embeddings.float(), dim=-1).reshape(n_classes, -1, prompt_embeddings.shape[-1])
    return F.normalize(emb.mean(dim=1), dim=-1)


def zeroshot_scores(image_features: np.ndarray, classifier: torch.Tensor, chunk: int = 65536) -> np.ndarray:
    """Cosine similarities (n_images, n_classes) between image features and class embeddings,
    normalised ``chunk`` rows at a time, so no second copy of the features is made."""
    weights = classifier.cpu().float()
    out = np.empty((len(image_features), weights.shape[1]), dtype=np.float32)
    for start in range(0, len(image_features), chunk):
        part = torch.from_numpy(np.ascontiguousarray(image_features[start : start + chunk], dtype=np.float32))
        out[start : start + chunk] = (F.normalize(part, dim=-1) @ weights).numpy()
    return out
