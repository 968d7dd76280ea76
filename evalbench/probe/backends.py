"""Logistic-regression solvers for the probe: scikit-learn's, and a torch L-BFGS that solves the
same objective on CPU or GPU.

Both minimise, over weights W and an unpenalised intercept b,

    sum_i loss(x_i W + b, y_i) + ||W||^2 / (2 C)

with the multinomial cross-entropy for single-label data with 3+ classes, the binary logistic
loss (one weight vector) for two classes, and one binary problem per class (one-vs-rest) for
multi-label data: scikit-learn's ``LogisticRegression(solver="lbfgs")`` objective in each case.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from threadpoolctl import threadpool_limits


class Backend(Protocol):
    name: str

    def fit(self, x: np.ndarray, y: np.ndarray, c: float, init: Any = None) -> Any:
        """Fit at regularisation C, optionally warm-started from an earlier fit's model."""

    def scores(self, model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
        """Class scores (n, n_classes); classes unseen in training score lowest."""


class SklearnBackend:
    name = "sklearn"

    def __init__(self, max_iter: int = 1000):
        self.max_iter = max_iter

    def fit(self, x, y, c, init=None):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        clf = LogisticRegression(C=c, max_iter=self.max_iter, solver="lbfgs")
        if y.ndim == 2:
            clf = OneVsRestClassifier(clf)
        # One BLAS thread: lbfgs on probe-sized problems is dominated by threading overhead
        # (the digits probe took 136 s with 2 OpenBLAS threads and 6 s with one, on 2 cores).
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message="Label .*present in all training examples")
            return clf.fit(x, y)

    def scores(self, model, x, n_classes):
        from sklearn.multiclass import OneVsRestClassifier

        if isinstance(model, OneVsRestClassifier):  # multi-label: already a column per class
            return model.predict_proba(x)
        out = np.zeros((len(x), n_classes))
        out[:, model.classes_] = model.predict_proba(x)
        return out


@dataclass
class TorchModel:
    weight: Any  # torch.Tensor (d, k)
    bias: Any  # torch.Tensor (k,)
    classes: np.ndarray  # the training classes, in column order
    kind: str  # "multinomial" | "binary" | "ovr"


class TorchBackend:
    """Full-batch L-BFGS with a strong-Wolfe line search on ``device``.

    The gradient is written out (no autograd): per evaluation, two matrix products, in float32.
    It stops where scikit-learn's lbfgs does: when the largest gradient entry of the objective
    divided by n falls below ``tol`` (1e-4, scikit-learn's default), or after ``max_iter``.
    """

    name = "torch"

    def __init__(self, device: str = "cpu", max_iter: int = 1000, tol: float = 1e-4):
        self.device, self.max_iter, self.tol = device, max_iter, tol
        self._data: tuple | None = None

    def _tensors(self, x: np.ndarray, y: np.ndarray):
        import torch

        # The sweep fits the same arrays many times: move them to the device once.
        if self._data is None or self._data[0] is not x or self._data[1] is not y:
            dtype = torch.float32
            classes = np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)
            if y.ndim == 2:
                target, kind = torch.as_tensor(y, dtype=dtype, device=self.device), "ovr"
            elif len(classes) == 2:
                target, kind = torch.as_tensor(y == classes[1], dtype=dtype, device=self.device)[:, None], "binary"
            else:
                onehot = np.searchsorted(classes, y)[:, None] == np.arange(len(classes))[None, :]
                target, kind = torch.as_tensor(onehot, dtype=dtype, device=self.device), "multinomial"
            xt = torch.as_tensor(x, dtype=dtype, device=self.device)
            self._data = (x, y, xt, target, classes, kind)
        return self._data[2:]

    def fit(self, x, y, c, init: TorchModel | None = None) -> TorchModel:
        import torch

        xt, target, classes, kind = self._tensors(x, y)
        n, d = xt.shape
        k = target.shape[1]
        if init is not None and init.weight.shape == (d, k):
            w, b = init.weight.clone().to(xt.dtype), init.bias.clone().to(xt.dtype)
        else:
            w, b = xt.new_zeros(d, k), xt.new_zeros(k)
        w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
        opt = torch.optim.LBFGS(
            [w, b], lr=1, max_iter=self.max_iter, tolerance_grad=self.tol, tolerance_change=1e-9,
            history_size=20, line_search_fn="strong_wolfe",
        )

        @torch.no_grad()
        def closure():
            logits = torch.addmm(b, xt, w)
            if kind == "multinomial":
                log_p = torch.log_softmax(logits, dim=1)
                loss = -(log_p * target).sum()
                # Clamped before exp: probabilities below float32's normal range would be
                # denormals, which make the next matrix product 20-80x slower on x86 (the
                # BLAS threads do not flush them); the gradient changes by < 1e-34 per entry.
                residual = log_p.clamp(min=-80).exp() - target
            else:  # one binary logistic problem per column
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="sum")
                residual = torch.sigmoid(logits.clamp(-80, 80)) - target
            # Divided by n: the same optimum as scikit-learn's, with a well-scaled gradient.
            w.grad.copy_((xt.T @ residual + w / c) / n)
            b.grad.copy_(residual.sum(dim=0) / n)
            return (loss + (w * w).sum() / (2 * c)) / n

        opt.step(closure)
        return TorchModel(w, b, classes, kind)

    def scores(self, model: TorchModel, x, n_classes):
        import torch

        with torch.no_grad():
            logits = torch.as_tensor(x, dtype=model.weight.dtype, device=self.device) @ model.weight + model.bias
            if model.kind == "ovr":
                return torch.sigmoid(logits).cpu().numpy()
            if model.kind == "binary":
                logits = torch.cat([-logits / 2, logits / 2], dim=1)  # same ranking and argmax
            probs = torch.softmax(logits, dim=1).cpu().numpy()
        out = np.zeros((len(x), n_classes))
        out[:, model.classes] = probs
        return out


BACKENDS = ("sklearn", "torch")


def make_backend(name: str, device: str = "cpu") -> Backend:
    if name == "sklearn":
        return SklearnBackend()
    if name == "torch":
        return TorchBackend(device=device)
    raise ValueError(f"unknown probe backend {name!r}")
