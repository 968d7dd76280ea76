"""Main scores over training steps as TensorBoard scalars: one event file per run, so TensorBoard
shows one curve per run. Written with torch's ``SummaryWriter`` (needs the ``tensorboard``
package, the ``tensorboard`` extra), imported only here."""

from __future__ import annotations

import re
from pathlib import Path

from evalbench.errors import EvalbenchError
from evalbench.report.build import Report
from evalbench.report.tables import mode_label

INSTALL_HINT = "pip install 'evalbench[tensorboard]'"
# Our event files end in this, so a rewrite replaces them and leaves a training script's own alone.
SUFFIX = ".evalbench"


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise EvalbenchError(f"--tensorboard: needs the tensorboard package ({INSTALL_HINT})") from None
    return SummaryWriter


def run_folder(run: str) -> str:
    """A run's subfolder name: the run with anything but letters, digits, ``._-`` as ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run).strip("-.") or "run"


def tag(mode: str, column: str) -> str:
    """``zeroshot/<task>``, ``linear_probe/<task>``, ``lp@4/<task>``, ``zeroshot/mean(<suite>)``."""
    return f"{mode_label(mode)}/{column}"


def write_tensorboard(report: Report, folder: Path | str) -> list[Path]:
    """Write every point of :attr:`Report.curves` (each checkpoint's main score per task and its
    suite means, fractions) as a scalar at the checkpoint's step, tagged :func:`tag`, with one
    writer per run in ``folder/<run>``. Earlier event files written by this function for those
    runs are replaced (files without its suffix are left alone). Returns the run folders.
    EvalbenchError without the tensorboard package, or when no record has a step."""
    writer_class = _writer_class()
    points = report.curves
    if points is None or points.empty:
        raise EvalbenchError("--tensorboard: no record has a step (model.step): nothing to plot over training")
    written = []
    for run, part in points.groupby("run", sort=True):
        target = Path(folder) / run_folder(str(run))
        old = list(target.glob(f"events.out.tfevents.*{SUFFIX}")) if target.is_dir() else []
        writer = writer_class(log_dir=str(target), filename_suffix=SUFFIX)
        try:
            for row in part.sort_values("step").itertuples():
                writer.add_scalar(tag(row.mode, row.column), row.value, global_step=int(row.step))
        finally:
            writer.close()
        for path in old:  # after the new file is complete, so a reader always finds one
            path.unlink(missing_ok=True)
        written.append(target)
    return written
