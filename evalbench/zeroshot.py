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
        prompts = [fill_template(t, c) for c in names for t in templates]
        emb = F.normalize(model.encode_texts(prompts), dim=-1).reshape(len(names), len(templates), -1)
        columns.append(F.normalize(emb.mean(dim=1), dim=-1))
    return torch.cat(columns).T.contiguous()


def zeroshot_scores(image_features: np.ndarray, classifier: torch.Tensor, chunk: int = 65536) -> np.ndarray:
    """Cosine similarities (n_images, n_classes) between image features and class embeddings,
    normalised ``chunk`` rows at a time, so no second copy of the features is made."""
    weights = classifier.cpu().float()
    out = np.empty((len(image_features), weights.shape[1]), dtype=np.float32)
    for start in range(0, len(image_features), chunk):
        part = torch.from_numpy(np.ascontiguousarray(image_features[start : start + chunk], dtype=np.float32))
        out[start : start + chunk] = (F.normalize(part, dim=-1) @ weights).numpy()
    return out
