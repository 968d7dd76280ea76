"""Linear probes: logistic regression on frozen features (backends, C sweep, k-shot)."""

from evalbench.probe.backends import BACKENDS, SklearnBackend, TorchBackend, make_backend
from evalbench.probe.sweep import SweepResult, choose_c, few_shot_probe, l2_normalize, linear_probe

__all__ = [
    "BACKENDS",
    "SklearnBackend",
    "SweepResult",
    "TorchBackend",
    "choose_c",
    "few_shot_probe",
    "l2_normalize",
    "linear_probe",
    "make_backend",
]
