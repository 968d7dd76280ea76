"""The probe protocol: C chosen on validation data, refit, scored on test; and k-shot probes.

The C sweep follows the CLIP paper: C = 1/lambda, lambda from 1e-6 to 1e6, first at every decade,
then refined around the best value by halving the step until it reaches 8 steps per decade. Ties
on the validation score go to the stronger regularisation (larger lambda). Each fit warm-starts
from the nearest C already fitted (the torch backend uses it; scikit-learn's starts cold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from evalbench.errors import EvalbenchError
from evalbench.metrics import METRICS, classification_metrics
from evalbench.probe.backends import Backend, SklearnBackend
from evalbench.records import pack_predictions

PROTOCOL_VERSION = 1
"""Part of the probe-result cache key: bump it whenever a change here or in the backends changes
the numbers, so results cached by older code are not reused."""
LOG_LAMBDA_RANGE = (-6, 6)
STEPS_PER_DECADE = 8

Split = tuple[np.ndarray, np.ndarray]  # (features, labels)


@dataclass
class SweepResult:
    best_c: float
    scores: dict[float, float] = field(default_factory=dict)  # C -> validation score, C descending


def choose_c(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    metric: str = "acc1",
    backend: Backend | None = None,
    progress: bool = True,
) -> SweepResult:
    """The CLIP paper's parametric search for C on a validation split."""
    backend = backend or SklearnBackend()
    scores: dict[int, float] = {}  # log10(lambda) in steps of 1/8 decade -> validation score
    models: dict[int, object] = {}
    lo, hi = (v * STEPS_PER_DECADE for v in LOG_LAMBDA_RANGE)
    bar = tqdm(desc=f"C sweep ({backend.name})", unit="fit", disable=not progress, leave=False)

    def evaluate(step: int) -> None:
        if lo <= step <= hi and step not in scores:
            init = models[min(models, key=lambda s: abs(s - step))] if models else None
            model = backend.fit(x_train, y_train, c=10 ** (-step / STEPS_PER_DECADE), init=init)
            models[step] = model
            scores[step] = METRICS[metric](y_val, backend.scores(model, x_val, n_classes))
            bar.update(1)

    def best() -> int:
        return max(scores, key=lambda s: (scores[s], s))

    # From strong to weak regularisation: each fit warm-starts from a simpler, nearby solution.
    for decade in range(LOG_LAMBDA_RANGE[1], LOG_LAMBDA_RANGE[0] - 1, -1):
        evaluate(decade * STEPS_PER_DECADE)
    step = STEPS_PER_DECADE
    while step > 1:
        step //= 2
        centre = best()
        evaluate(centre - step)
        evaluate(centre + step)
    bar.close()
    return SweepResult(
        best_c=10 ** (-best() / STEPS_PER_DECADE),
        scores={10 ** (-s / STEPS_PER_DECADE): v for s, v in sorted(scores.items())},
    )


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _prepare(split: Split, normalize: bool) -> Split:
    return (l2_normalize(split[0]) if normalize else split[0], split[1])


def linear_probe(
    train: Split,
    val: Split,
    test: Split,
    n_classes: int,
    metric: str,
    backend: Backend | None = None,
    normalize: bool = False,
    progress: bool = True,
) -> dict:
    """Choose C on ``val``, refit on train+val, score on ``test``: the metrics plus the choices."""
    backend = backend or SklearnBackend()
    train, val, test = (_prepare(s, normalize) for s in (train, val, test))
    sweep = choose_c(*train, *val, n_classes=n_classes, metric=metric, backend=backend, progress=progress)
    model = backend.fit(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]), sweep.best_c)
    scores = backend.scores(model, test[0], n_classes)
    result = classification_metrics(test[1], scores, metric)
    if test[1].ndim == 1:
        result["per_sample"] = pack_predictions(scores, test[1])
    result.update(
        C=sweep.best_c,
        n_train=len(train[1]),
        n_val=len(val[1]),
        n=len(test[1]),
        backend=backend.name,
        normalize=normalize,
        val_scores=[[c, s] for c, s in sweep.scores.items()],
    )
    return result


def draw_shots(labels: np.ndarray, k: int, rng: np.random.Generator, classnames: list[str], split: str) -> np.ndarray:
    """Row indices of ``k`` examples per class, drawn by ``rng``; a class with fewer is an error."""
    rows = []
    for cls, name in enumerate(classnames):
        candidates = np.flatnonzero(labels == cls)
        if len(candidates) < k:
            raise EvalbenchError(
                f"--shots: class '{name}' has {len(candidates)} {split} examples, fewer than {k}"
            )
        rows.append(rng.choice(candidates, size=k, replace=False))
    return np.sort(np.concatenate(rows))


def few_shot_probe(
    train: Split,
    val: Split,
    test: Split,
    classnames: list[str],
    metric: str,
    k: int,
    seeds: int,
    backend: Backend | None = None,
    normalize: bool = False,
    progress: bool = True,
) -> dict:
    """k-shot probes over ``seeds`` draws.

    For each seed: k examples per class are drawn from train, and C is chosen on k examples per
    class drawn by the same seed from val (never the whole val split); the probe is then fitted
    on the k training shots alone and scored on the full test split. Returns each seed's numbers,
    and the mean and standard deviation of every metric.
    """
    if train[1].ndim == 2:
        raise EvalbenchError("--shots: few-shot probes are for single-label tasks")
    backend = backend or SklearnBackend()
    train, val, test = (_prepare(s, normalize) for s in (train, val, test))
    n_classes = len(classnames)
    runs = []
    for seed in range(seeds):
        tr = draw_shots(train[1], k, np.random.default_rng([seed, 0]), classnames, "train")
        va = draw_shots(val[1], k, np.random.default_rng([seed, 1]), classnames, "val")
        sweep = choose_c(train[0][tr], train[1][tr], val[0][va], val[1][va], n_classes, metric, backend, progress)
        model = backend.fit(train[0][tr], train[1][tr], sweep.best_c)
        run = classification_metrics(test[1], backend.scores(model, test[0], n_classes), metric)
        runs.append({"seed": seed, **run, "C": sweep.best_c})
    metrics = [m for m in runs[0] if m not in {"seed", "C"}]
    summary = {m: float(np.mean([r[m] for r in runs])) for m in metrics}
    summary.update({f"{m}_std": float(np.std([r[m] for r in runs])) for m in metrics})
    summary.update(
        k=k, seeds=seeds, n_train=k * n_classes, n_val=k * n_classes, n=len(test[1]),
        backend=backend.name, normalize=normalize, runs=runs,
    )
    return summary
