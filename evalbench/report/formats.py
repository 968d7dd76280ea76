"""Report formats: name -> renderer (Report -> text), imported only when used.

The CLI's ``--format`` choices come from this table without importing pandas; a new format is
one entry here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from evalbench.errors import EvalbenchError

RENDERERS: dict[str, str] = {
    "md": "evalbench.report.text:render_md_or_empty",
    "csv": "evalbench.report.text:render_csv",
    "latex": "evalbench.report.text:render_latex_or_empty",
    "html": "evalbench.report.html:render_html",
    "json": "evalbench.report.text:render_json",
}
FORMATS: tuple[str, ...] = tuple(RENDERERS)


def renderer(fmt: str) -> Callable:
    """The function rendering a Report as ``fmt``; EvalbenchError naming the known formats."""
    if fmt not in RENDERERS:
        raise EvalbenchError(f"--format: unknown format '{fmt}' (use {', '.join(FORMATS)})")
    module, _, name = RENDERERS[fmt].partition(":")
    return getattr(importlib.import_module(module), name)
