"""The one exception type for mistakes a user can make (bad YAML, unknown model, missing data)."""

from __future__ import annotations


class EvalbenchError(ValueError):
    """A user-facing error. The CLI prints its message as one line and exits with code 2.

    The message names the file and field (or the setting) at fault where there is one, e.g.
    ``tasks/cifar10.yaml: splits.test: field required`` or
    ``modes: 'zero-shot' is not allowed (allowed: zeroshot, linear_probe)``. It is a ValueError,
    so code that already guards against bad values catches it.
    """


class MissingSplitError(EvalbenchError):
    """A task names a split its data source does not have.

    Raised by a source's ``load_split``; ``split`` is the name asked for, ``available`` the
    splits the source does have (sorted; empty when the source cannot list them), ``where`` the
    folder or dataset looked in, and ``task`` the task's name once the data loader knows it. At
    run time this is not fatal: the modes that need the split are skipped and reported (see
    :class:`evalbench.runners.SkippedMode`); elsewhere it is an ordinary ``EvalbenchError``.
    """

    def __init__(self, split: str, available: list[str], where: str, task: str | None = None, prefix: str = ""):
        self.split, self.available, self.where, self.task = split, sorted(available), where, task
        has = ", ".join(self.available) or "none found"
        super().__init__(f"{prefix}splits: no split '{split}' in {where} (the source has: {has})")

    def for_task(self, task: str, prefix: str) -> "MissingSplitError":
        """The same error, naming ``task`` and with ``prefix`` (the task file) before the message."""
        return MissingSplitError(self.split, self.available, self.where, task, prefix)


class ModelLoadError(EvalbenchError):
    """A model's weights failed to load (a corrupt file, weights of another architecture, an
    adapter that raised). ``model`` is its display name, ``spec`` its ``--model`` spec and
    ``reason`` the underlying error as one line. ``evalbench.api.run`` catches it per model: the
    other models still run, and the failure is listed in ``Evaluation.failed``.
    """

    def __init__(self, model: str, spec: str, reason: str):
        self.model, self.spec, self.reason = model, spec, reason
        super().__init__(f"{model}: failed to load ({spec}): {reason}")
