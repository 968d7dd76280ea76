"""evalbench: zero-shot and linear-probe transfer evaluation for CLIP-like models.

Use from Python::

    import evalbench
    table = evalbench.evaluate(["demo-final"], ["digits"], modes=["zeroshot"])  # a pandas DataFrame
    evalbench.list_tasks("imagenet*")
    records = evalbench.load_records("results")
    print(evalbench.report("results", format="md"))
    evaluator = evalbench.Evaluator(suite="offline", preprocess=preprocess, tokenizer=tokenizer, run="exp1")
    scores = evaluator(model, step=1000)  # in a training loop: {task: {metric: value}}

Names are imported on first use, so ``import evalbench`` is instant and the CLI starts fast.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "evaluate": "evalbench.api",
    "Evaluator": "evalbench.evaluator",
    "list_tasks": "evalbench.api",
    "load_records": "evalbench.api",
    "EvalbenchError": "evalbench.errors",
    "RunConfig": "evalbench.config",
    "make_config": "evalbench.config",
    "Record": "evalbench.records",
}
__all__ = sorted([*_EXPORTS, "report", "__version__"])


def __getattr__(name: str):
    if name == "report":
        # ``evalbench.report`` is the report subpackage, and calling it runs evalbench.api.report
        # (see evalbench/report/__init__.py): ``evalbench.report("results", format="html")``.
        return importlib.import_module("evalbench.report")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evalbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


