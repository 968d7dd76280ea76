"""Zero-shot image association (WinoGAViL): a text cue, several candidate images, and the task of
choosing the candidates that go with the cue.

Scoring follows DataComp (``eval_utils/wino_eval.py``): the cue becomes the prompt "A cue" / "An
cue" (:func:`cue_prompt`); each candidate is scored by the cosine similarity of its image to the
prompt; the ``k`` best candidates are chosen, ``k`` being the number of true associations; the
question scores the Jaccard index of chosen and true sets (:func:`evalbench.metrics.jaccard_index`),
and questions are averaged by candidate count (:func:`evalbench.metrics.jaccard_metrics`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from evalbench.metrics import jaccard_index, jaccard_metrics
from evalbench.sources.base import Association


def cue_prompt(cue: str) -> str:
    """DataComp's WinoGAViL prompt (``get_clip_prompt``): the cue lower-cased after "A", or "An"
    when it starts with a vowel letter."""
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in ("a", "e", "i", "o", "u") else f"A {cue}"


def association_metrics(
    image_features: np.ndarray, rows: np.ndarray, cue_features: np.ndarray, questions: list[Association]
) -> dict[str, float]:
    """Jaccard summaries (avg_jaccard_score, jaccard_score_5 ... jaccard_score_10-12) of
    ``questions``. ``image_features[i]`` is the image at split row ``rows[i]`` (sorted);
    ``cue_features[q]`` is the embedding of question q's prompt."""
    img = F.normalize(torch.from_numpy(np.asarray(image_features)).float(), dim=-1).numpy()
    txt = F.normalize(torch.from_numpy(np.asarray(cue_features)).float(), dim=-1).numpy()
    jaccards, sizes = [], []
    for q, question in enumerate(questions):
        candidates = img[np.searchsorted(rows, np.asarray(question.images))]
        answers = np.zeros(len(question.images), dtype=bool)
        answers[list(question.answers)] = True
        jaccards.append(jaccard_index(answers, candidates @ txt[q]))
        sizes.append(len(question.images))
    return jaccard_metrics(np.asarray(jaccards), np.asarray(sizes))
