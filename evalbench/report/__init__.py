"""Records -> pandas -> reports: md, csv, latex, json and a self-contained html page.

Layout: ``tables`` (main scores, suite means, ranks), ``stats`` (paired bootstrap, McNemar),
``compare`` (deltas against a baseline), ``build`` (a Report from records), ``text`` (md, csv,
latex, json), ``html`` and ``plots`` (matplotlib, optional), ``formats`` (name -> renderer).

Names are imported on first use, so ``evalbench.report.formats`` (the CLI's choices) does not
pull in pandas.
"""

import importlib
import sys
import types

_EXPORTS = {
    "FORMATS": "formats", "CompareOptions": "compare", "Report": "build", "baseline_deltas": "compare",
    "build_report": "build", "load_records": "build", "long_table": "tables", "main_score_tables": "tables",
    "mode_label": "tables", "mode_order": "tables", "rank_table": "tables", "render": "text",
    "render_report": "text",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'evalbench.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"evalbench.report.{_EXPORTS[name]}"), name)


class _CallableModule(types.ModuleType):
    """``evalbench.report(...)`` calls :func:`evalbench.api.report`: the package doubles as the
    public report function, since a function of that name on ``evalbench`` would be replaced by
    this subpackage as soon as it is imported."""

    def __call__(self, *args, **kwargs) -> str:
        from evalbench.api import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
