"""``evalbench watch``: evaluate each new checkpoint a training run writes into a folder, once.

Every ``interval`` seconds the folder is listed. A checkpoint is evaluated only once its size and
modification time were the same at two polls in a row, so a file still being written is never
read; temporary and hidden names (``*.tmp``, ``*.part``, ``.*``) are never considered. A
checkpoint that fails to load is tried again at the next poll and reported only if it fails
again. A checkpoint whose records are complete (an earlier watch, or ``evalbench run``) is not
evaluated again, nor even loaded, so a stopped watch restarts where it was. Under ``torchrun``,
rank 0 lists the folder and decides; the decision is broadcast at every poll, and every rank then
takes part in the normal run, each encoding its share of the feature shards.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from evalbench import api, distributed
from evalbench.config import RunConfig
from evalbench.errors import EvalbenchError
from evalbench.models import LazyModel
from evalbench.models.base import ModelSpec
from evalbench.models.checkpoint import CHECKPOINT_SUFFIXES, digest_memo
from evalbench.models.sweep import checkpoint_spec
from evalbench.records import load_record, record_path
from evalbench.tasks.loader import BUILTIN_TASKS_DIR, TaskRegistry, natural_key

log = logging.getLogger(__name__)

# Names a writer uses until the file is complete (then renamed), and hidden files.
TEMPORARY = ("*.tmp", "*.part", "*.partial", "*.incomplete", "*~", ".*")

Stat = tuple[int, int]  # (size in bytes, mtime in ns)


@dataclass
class WatchSummary:
    """What a watch did: checkpoints evaluated, found already evaluated, and failed to load."""

    evaluated: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: list[api.FailedModel] = field(default_factory=list)

    def describe(self) -> str:
        return (f"watch: {len(self.evaluated)} checkpoint(s) evaluated, {len(self.already)} already evaluated, "
                f"{len(self.failed)} failed to load")


def is_candidate(name: str, pattern: str | None) -> bool:
    """A file name watch considers: not temporary or hidden; matching ``pattern`` (fnmatch), or
    with a checkpoint suffix when there is none."""
    if any(fnmatch.fnmatch(name, t) for t in TEMPORARY):
        return False
    return fnmatch.fnmatch(name, pattern) if pattern else name.endswith(CHECKPOINT_SUFFIXES)


def scan_folder(folder: Path, pattern: str | None) -> dict[str, Stat]:
    """``{file name: (size, mtime_ns)}`` of the candidate checkpoints in ``folder``."""
    found = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if is_candidate(entry.name, pattern) and entry.is_file():
                st = entry.stat()
                found[entry.name] = (st.st_size, st.st_mtime_ns)
    return found


class CheckpointWatcher:
    """The state of one watch: what each poll saw, what is done, what failed once.

    ``scan`` lists the folder (``{name: (size, mtime_ns)}``); tests replace it. :meth:`poll` runs
    on rank 0 only; :meth:`evaluate` on every rank.
    """

    def __init__(self, folder: Path, arch: str, tasks: list[str], config: RunConfig, registry: TaskRegistry,
                 name: str | None = None, pattern: str | None = None, report: Path | None = None,
                 scan: Callable[[], dict[str, Stat]] | None = None):
        self.folder, self.arch, self.tasks, self.config, self.registry = Path(folder), arch, tasks, config, registry
        self.name, self.report = name, report
        self.scan = scan or (lambda: scan_folder(self.folder, pattern))
        self.task_objs = [registry.get(t) for t in dict.fromkeys(tasks)]
        self.seen: dict[str, Stat] = {}  # the previous poll's listing
        self.done: set[str] = set()
        self.tries: dict[str, int] = {}  # checkpoints that failed to load once, to retry
        self.summary = WatchSummary()

    def spec(self, file_name: str) -> ModelSpec:
        return checkpoint_spec(self.arch, self.folder / file_name, self.name)

    def poll(self) -> tuple[list[str], bool]:
        """One look at the folder: (checkpoints to evaluate now, in natural order; whether the
        folder changed since the last poll). Checkpoints whose records are complete are marked done
        here without being loaded."""
        now = self.scan()
        changed = now != self.seen
        for name in now.keys() - self.seen.keys() - self.done:
            log.info("new checkpoint %s: evaluated once its size stays the same until the next poll", name)
        stable = [n for n, st in now.items() if n not in self.done and self.seen.get(n) == st]
        for name in [n for n in self.tries if n not in now or self.seen.get(n) != now[n]]:
            del self.tries[name]  # rewritten or removed since it failed: a fresh start
        self.seen = now
        ready = []
        for name in sorted(stable, key=natural_key):
            if self.finished(self.spec(name)):
                log.info("%s: already evaluated (its records are complete); not loaded", name)
                self.done.add(name)
                self.summary.already.append(self.spec(name).name)
            else:
                ready.append(name)
        return ready, changed

    def finished(self, spec: ModelSpec) -> bool:
        """Whether every record of ``spec`` holds every result this watch asks for (the same
        test as ``evalbench run``'s; it hashes the file, memoised in the cache, but loads
        nothing). Always False under ``--overwrite``."""
        if self.config.overwrite:
            return False
        with digest_memo(self.config.cache_dir if self.config.use_cache else None):
            return self._finished(spec)

    def _finished(self, spec: ModelSpec) -> bool:
        model = None
        for task in self.task_objs:
            record = load_record(record_path(self.config.results_dir, spec.slug, task.name))
            if record is None:
                return False
            model = model or LazyModel(spec, torch.device("cpu"), self.config.trust_remote_code)
            todo = api.pending_modes(record, model, task, self.config)
            if task.spec.splits.train is None:
                todo = [m for m in todo if not m.startswith("linear_probe")]
            if todo:
                return False
        return True

    def evaluate(self, name: str) -> None:
        """Evaluate one checkpoint (every rank takes part). A load failure is retried at the next
        poll once, then reported."""
        spec = self.spec(name)
        log.info("evaluating %s as %s (step %s, run %s)", name, spec.name, spec.step, spec.run)
        result = api.run([spec], self.tasks, self.config, self.registry)
        if not distributed.is_main():
            return
        if not result.failed:
            self.done.add(name)
            self.tries.pop(name, None)
            self.summary.evaluated.append(spec.name)
            self.write_report()
            return
        self.tries[name] = self.tries.get(name, 0) + 1
        if self.tries[name] < 2:
            log.warning("%s failed to load; trying again at the next poll (%s)", name, result.failed[0].reason)
            return
        log.error("%s failed to load twice; not tried again: %s", name, result.failed[0].reason)
        del self.tries[name]
        self.done.add(name)
        self.summary.failed += result.failed

    def write_report(self) -> None:
        if self.report is None:
            return
        extra = [d for d in self.registry.dirs if d != BUILTIN_TASKS_DIR]
        api.report(self.config.results_dir, format="html", output=self.report, tasks_dir=extra)
        log.info("wrote %s", self.report)


def watch_folder(folder: Path, arch: str, tasks: list[str], config: RunConfig, registry: TaskRegistry, *,
                 name: str | None = None, pattern: str | None = None, interval: float = 60.0,
                 until_idle: float | None = None, report: Path | None = None,
                 scan: Callable[[], dict[str, Stat]] | None = None,
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] | None = None) -> WatchSummary | None:
    """Watch ``folder`` until ``until_idle`` seconds pass without a new checkpoint (forever when
    None; Ctrl-C stops it cleanly), evaluating each checkpoint as ``ARCH@folder/FILE`` on
    ``tasks``. Returns the summary on rank 0, None on other torchrun ranks. Raises EvalbenchError
    for a folder that does not exist, an unknown task or architecture, before anything loads.
    ``scan``, ``sleep`` and ``clock`` stand in for the folder listing and time in tests."""
    sleep, clock = sleep or time.sleep, clock or time.monotonic
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalbenchError(f"watch: {folder}: no such folder (create it, or start the watch once training has)")
    checkpoint_spec(arch, folder / "check.pt", name)  # the spec's syntax, before the first poll
    watcher = CheckpointWatcher(folder, arch, tasks, config, registry, name, pattern, report, scan)
    distributed.init_from_env(distributed.local_device(api.resolve_device(config.device)))
    main = distributed.is_main()
    log.info("watching %s for %s every %gs%s", folder, pattern or "checkpoints", interval,
             f", until {until_idle:g}s pass without a new one" if until_idle is not None else " (Ctrl-C stops)")
    last_news = clock()
    try:
        while True:
            if main:
                ready, changed = watcher.poll()
                idle = clock() - last_news
                stop = not ready and not changed and not watcher.tries and until_idle is not None and idle >= until_idle
            ready, changed, stop = distributed.broadcast((ready, changed, stop) if main else None)
            if stop:
                log.info("no new checkpoint for %gs: stopping", until_idle)
                break
            for checkpoint in ready:
                watcher.evaluate(checkpoint)
            if ready or changed:
                last_news = clock()
            sleep(interval)
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    return watcher.summary if main else None
