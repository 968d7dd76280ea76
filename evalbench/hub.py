"""Talking to the Hugging Face hub: is it reachable, and did a failure come from not reaching it."""

from __future__ import annotations

# Exception class names (anywhere in the chain of causes) that mean "the hub was not reached":
# huggingface_hub's offline mode and cache misses, requests/urllib3 connection failures.
_OFFLINE_ERRORS = frozenset({
    "OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError", "MaxRetryError",
    "ConnectTimeout", "ConnectError", "NameResolutionError",
})
# Messages that datasets uses for the same thing without a dedicated exception class.
_OFFLINE_MESSAGES = ("Couldn't reach", "offline mode", "OfflineModeIsEnabled", "LocalEntryNotFound")


def hub_offline() -> bool:
    """True when huggingface_hub is told not to contact the hub (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_offline_error(exc: BaseException) -> bool:
    """True if ``exc`` or any exception in its chain of causes means the hub was not reached."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in _OFFLINE_ERRORS or any(m in str(seen) for m in _OFFLINE_MESSAGES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
