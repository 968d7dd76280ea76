"""The one exception type for mistakes a user can make (bad YAML, unknown model, missing data)."""


class EvalbenchError(ValueError):
    """A user-facing error. The CLI prints its message as one line and exits with code 2.

    The message names the file and field (or the setting) at fault where there is one, e.g.
    ``tasks/cifar10.yaml: splits.test: field required`` or
    ``modes: 'zero-shot' is not allowed (allowed: zeroshot, linear_probe)``. It is a ValueError,
    so code that already guards against bad values catches it.
    """
