"""Zero-shot image-text retrieval: recall@k in both directions.

Names follow CLIP_benchmark so that results line up with published tables:
``image_retrieval_recall@k`` is text -> image (a caption retrieves its image), and
``text_retrieval_recall@k`` is image -> text (an image retrieves any of its captions).
``mean_recall@1`` is the mean of the two R@1 (DataComp's main score).

Ties: candidates are ranked by descending cosine similarity, and equal scores are ordered by
candidate index (a stable sort), so a tie never counts in a query's favour unless the correct
candidate comes first in the data's order. The result is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from evalbench.models.base import ModelAdapter

KS = (1, 5, 10)


def ranks(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Rank (0 = first) of candidate ``positives[q]`` for each query row of ``scores`` (queries x
    candidates), by descending score with ties broken by lower candidate index."""
    target = scores[np.arange(len(scores)), positives][:, None]
    index = np.arange(scores.shape[1])[None, :]
    return (scores > target).sum(axis=1) + ((scores == target) & (index < positives[:, None])).sum(axis=1)


def retrieval_metrics(
    image_features: np.ndarray, text_features: np.ndarray, text_image: np.ndarray, chunk: int = 1024
) -> dict[str, float]:
    """Recall@1/5/10 both ways and mean_recall@1. ``text_image[t]`` is the image of caption t."""
    img = F.normalize(torch.from_numpy(image_features).float(), dim=-1).numpy()
    txt = F.normalize(torch.from_numpy(text_features).float(), dim=-1).numpy()
    text_rank = np.concatenate(
        [ranks(txt[s : s + chunk] @ img.T, text_image[s : s + chunk]) for s in range(0, len(txt), chunk)]
    )
    # Image -> text: an image's rank is the best rank among its captions.
    image_rank = np.full(len(img), np.iinfo(np.int64).max)
    for s in range(0, len(img), chunk):
        scores = img[s : s + chunk] @ txt.T  # (images, texts)
        captions = np.flatnonzero((text_image >= s) & (text_image < s + chunk))
        r = ranks(scores[text_image[captions] - s], captions)
        np.minimum.at(image_rank, text_image[captions], r)
    out = {}
    for k in KS:
        out[f"image_retrieval_recall@{k}"] = float(np.mean(text_rank < k))
        out[f"text_retrieval_recall@{k}"] = float(np.mean(image_rank < k))
    out["mean_recall@1"] = (out["image_retrieval_recall@1"] + out["text_retrieval_recall@1"]) / 2
    return out


@torch.inference_mode()
def encode_texts(model: ModelAdapter, texts: list[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Text embeddings (n, dim), float32, in batches."""
    parts = []
    for start in tqdm(range(0, len(texts), batch_size), desc="captions", unit="batch", disable=not progress, leave=False):
        parts.append(model.encode_texts(texts[start : start + batch_size]).float().cpu().numpy())
    return np.concatenate(parts)
