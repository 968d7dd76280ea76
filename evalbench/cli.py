"""Command line: argument parsing only; the work happens in evalbench.api and friends."""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import sys
from pathlib import Path

from evalbench.config import MODES, choices
from evalbench.errors import EvalbenchError
from evalbench.report.formats import FORMATS

log = logging.getLogger("evalbench")

DEFAULT_MODELS = ["demo-early", "demo-final"]
DEFAULT_SUITE = "offline"


def _csv(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors")
    return common


def _sub(subparsers, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help, description=f"{help}\n\nexample:\n  {example}", formatter_class=_Formatter,
        parents=[_common()],
    )


def _add_tasks_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tasks-dir", action="append", default=[], metavar="DIR", help="extra folder of task YAML files (repeatable)"
    )


def _add_probe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe-backend", default="sklearn", choices=choices("probe_backend"), help="logistic regression solver")
    p.add_argument("--probe-normalize", action="store_true", help="L2-normalise features before the probe")
    p.add_argument("--shots", default="", metavar="K,K", help="k-shot probes, e.g. 1,2,4,8,16")
    p.add_argument("--seeds", type=int, default=3, help="draws per k-shot probe")


def _add_run_settings(run: argparse.ArgumentParser) -> None:
    """Flags of every RunConfig setting, shared by ``run`` and ``watch``."""
    run.add_argument("--tasks", action="append", metavar="A,B", help="task names or .yaml paths, comma-separated")
    run.add_argument("--suite", action="append", metavar="NAME", help="a suite from tasks/suites/ (repeatable)")
    _add_tasks_dir(run)
    run.add_argument("--mode", default=",".join(MODES), help=f"{', '.join(choices('modes'))}, comma-separated")
    run.add_argument("--results-dir", type=Path, default=Path("results"), help="where records are written")
    run.add_argument(
        "--cache-dir", type=Path, default=None, help="feature cache (default: $EVALBENCH_CACHE or ~/.cache/evalbench)"
    )
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the cache (features, text classifiers, probe results)")
    run.add_argument("--cache-dtype", default="float32", choices=choices("cache_dtype"), help="stored feature dtype")
    run.add_argument("--precision", default="fp32", choices=choices("precision"), help="amp: bf16/fp16 autocast on CUDA")
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (>= 0)")
    run.add_argument("--device", default="auto", help="auto, cpu, mps, cuda or cuda:N")
    run.add_argument("--limit", type=int, default=None, help="evaluate at most N images per split")
    run.add_argument("--seed", type=int, default=0, help="seed for --limit subsets")
    _add_probe_options(run)
    run.add_argument(
        "--on-bad-image", default="error", choices=choices("on_bad_image"),
        help="an undecodable image stops the run (naming it), or is left out and counted",
    )
    run.add_argument("--overwrite", action="store_true", help="recompute and replace existing records")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument(
        "--trust-remote-code", action="store_true", help="let hf: models run Python code from their repository"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalbench",
        description="Zero-shot and linear-probe evaluation of CLIP-like models.\n\n"
        "example:\n  evalbench run --model ViT-B-32@laion2b_s34b_b79k --tasks cifar10",
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = _sub(
        sub,
        "run",
        "evaluate models on tasks (defaults: the bundled demo models on the offline suite)",
        "evalbench run --model ViT-B-32@laion2b_s34b_b79k --model hf:openai/clip-vit-base-patch32 --suite quick",
    )
    run.add_argument(
        "--model",
        action="append",
        metavar="SPEC",
        help="[NAME=]ARCH, ARCH@TAG, ARCH@PATH, a bundled name (demo-final), hf:ID_OR_DIR[@PATH], "
        "py:MODULE:FACTORY or PLUGIN:ARGS (see docs/models.md); a glob in PATH ('ARCH@ckpts/epoch_*.pt') "
        "evaluates every matching checkpoint; repeatable",
    )
    _add_run_settings(run)

    watch = _sub(
        sub, "watch",
        "evaluate each new checkpoint that appears in a folder, once, as a training run writes them",
        "evalbench watch runs/exp1/checkpoints --arch ViT-B-32 --suite quick --pattern 'epoch_*.pt' "
        "--interval 60 --until-idle 3600 --report exp1.html",
    )
    watch.add_argument("folder", type=Path, metavar="DIR", help="the folder the training run writes checkpoints to")
    watch.add_argument("--arch", required=True, metavar="ARCH_OR_CONFIG",
                       help="what each checkpoint is loaded into: an open_clip architecture, a model-config JSON, "
                       "or hf:BASE (the model spec is ARCH@DIR/FILE)")
    watch.add_argument("--name", default=None, metavar="NAME",
                       help="models are named NAME/STEM and belong to run NAME (default: STEM, run = the folder's name)")
    watch.add_argument("--pattern", default=None, metavar="GLOB",
                       help="file names to evaluate (default: any *.pt, *.pth, *.bin, *.safetensors, *.ckpt)")
    watch.add_argument("--interval", type=float, default=60.0, metavar="SECONDS", help="seconds between polls")
    watch.add_argument("--until-idle", type=float, default=None, metavar="SECONDS",
                       help="stop after this long without a new checkpoint (default: run until Ctrl-C)")
    watch.add_argument("--report", type=Path, default=None, metavar="PATH.html",
                       help="rewrite this HTML report after each checkpoint")
    _add_run_settings(watch)
    tasks = _sub(sub, "tasks", "list, show and validate tasks", "evalbench tasks list 'imagenet*'")
    tasks_sub = tasks.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    t_list = _sub(tasks_sub, "list", "list tasks, optionally matching a wildcard", "evalbench tasks list 'shapes-*'")
    t_list.add_argument("pattern", nargs="?", default=None)
    _add_tasks_dir(t_list)
    t_show = _sub(tasks_sub, "show", "print a task's YAML after includes are merged", "evalbench tasks show digits")
    t_show.add_argument("name")
    _add_tasks_dir(t_show)
    t_val = _sub(tasks_sub, "validate", "check task files or folders of them", "evalbench tasks validate tasks/")
    t_val.add_argument("paths", nargs="+", type=Path)

    models = _sub(sub, "models", "list model architectures and tags", "evalbench models list 'ViT-B-*'")
    models_sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    m_list = _sub(models_sub, "list", "open_clip architectures with their pretrained tags", "evalbench models list 'ViT-*'")
    m_list.add_argument("pattern", nargs="?", default=None)

    probe = _sub(
        sub,
        "probe",
        "the linear-probe protocol on features you bring (npz: x_train, y_train, [x_val, y_val,] x_test, y_test)",
        "evalbench probe --features feats.npz --backend torch --shots 4 --seeds 3 --json",
    )
    probe.add_argument("--features", type=Path, required=True, metavar="FILE.npz")
    probe.add_argument("--backend", default="sklearn", choices=choices("probe_backend"))
    probe.add_argument("--normalize", action="store_true", help="L2-normalise features first")
    probe.add_argument("--shots", type=_positive_int, default=None, metavar="K", help="k-shot probe")
    probe.add_argument("--seeds", type=_positive_int, default=3)
    probe.add_argument("--metric", default="acc1", choices=["acc1", "acc5", "mean_per_class_recall"])
    probe.add_argument("--device", default="cpu", help="device of the torch backend")
    probe.add_argument("--json", action="store_true", help="print the result as one JSON object")

    cache = _sub(sub, "cache", "inspect or clear the feature cache", "evalbench cache clear 'ViT-B-32*'")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    c_list = _sub(cache_sub, "list", "list cached features and text classifiers", "evalbench cache list")
    c_clear = _sub(cache_sub, "clear", "remove entries whose MODEL/TASK/SPLIT matches", "evalbench cache clear '*/cifar10/*'")
    c_clear.add_argument("pattern", nargs="?", default=None, help="fnmatch pattern on MODEL/TASK/SPLIT (all if omitted)")
    for p in (c_list, c_clear):
        p.add_argument("--cache-dir", type=Path, default=None)

    report = _sub(
        sub, "report", "tables of results, deltas against a baseline with paired intervals, plots",
        "evalbench report --baseline demo-early --format html --output report.html\n"
        "  evalbench report --baseline exp1@8 --plots plots/ --tensorboard runs/tb   # checkpoints of a run",
    )
    report.add_argument("--results-dir", type=Path, default=Path("results"))
    report.add_argument("--format", default="md", choices=FORMATS)
    report.add_argument("--output", type=Path, default=None, help="write here instead of standard output")
    report.add_argument("--baseline", default=None, metavar="NAME|RUN@STEP",
                        help="model to compare every other model against, or the checkpoint of run RUN at step STEP")
    report.add_argument("--resamples", type=_positive_int, default=1000, help="paired bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    report.add_argument("--plots", type=Path, default=None, metavar="DIR",
                        help="also write the plots as PNG files here (curves over steps in DIR/curves/)")
    report.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                        help="also write each checkpoint's main scores as TensorBoard scalars, one subfolder per run")
    report.add_argument("--published", action="store_true",
                        help="beside every open_clip ARCH@TAG record, its published zero-shot figure and ours minus it")
    report.add_argument("--published-tolerance", type=float, default=None, metavar="POINTS",
                        help="flag differences from the published figure larger than this (default 0.5; implies --published)")
    report.add_argument("--per-group", action="store_true",
                        help="also show each group's values for tasks with group_by (md)")
    _add_tasks_dir(report)
    return parser


# RunConfig setting -> the flag that sets it, so a bad value is reported under the flag typed.
RUN_FLAGS = {
    "modes": "--mode", "results_dir": "--results-dir", "cache_dir": "--cache-dir", "batch_size": "--batch-size",
    "workers": "--workers", "device": "--device", "limit": "--limit", "precision": "--precision",
    "probe_backend": "--probe-backend", "probe_normalize": "--probe-normalize", "shots": "--shots",
    "seeds": "--seeds", "use_cache": "--no-cache", "cache_dtype": "--cache-dtype", "on_bad_image": "--on-bad-image",
    "overwrite": "--overwrite", "seed": "--seed", "progress": "--no-progress", "trust_remote_code": "--trust-remote-code",
}


def _tasks(args, registry) -> list[str]:
    tasks = _csv(args.tasks)
    for suite in args.suite or []:
        tasks += registry.suite(suite).tasks
    return tasks


def _run_config(args):
    """The RunConfig the flags of :func:`_add_run_settings` describe (validated)."""
    from evalbench.config import default_cache_dir, make_config

    return make_config(
        RUN_FLAGS,
        modes=tuple(_csv([args.mode])),
        results_dir=args.results_dir,
        cache_dir=args.cache_dir or default_cache_dir(),
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        limit=args.limit,
        precision=args.precision,
        probe_backend=args.probe_backend,
        probe_normalize=args.probe_normalize,
        shots=args.shots or (),
        seeds=args.seeds,
        use_cache=not args.no_cache,
        cache_dtype=args.cache_dtype,
        on_bad_image=args.on_bad_image,
        overwrite=args.overwrite,
        seed=args.seed,
        progress=not args.no_progress and not args.quiet and os.environ.get("RANK", "0") == "0",
        trust_remote_code=args.trust_remote_code,
    )


def cmd_run(args) -> int:
    from evalbench import distributed
    from evalbench.api import run
    from evalbench.report import load_records, render
    from evalbench.tasks.loader import TaskRegistry

    registry = TaskRegistry(args.tasks_dir)
    tasks = _tasks(args, registry)
    config = _run_config(args)
    if not tasks:
        tasks = registry.suite(DEFAULT_SUITE).tasks
        log.info("no --tasks or --suite: running the '%s' suite", DEFAULT_SUITE)
    models = args.model or DEFAULT_MODELS
    if not args.model:
        log.info("no --model: running the bundled checkpoints %s", ", ".join(DEFAULT_MODELS))
    paths = run(models, tasks, config, registry)
    if not distributed.is_main():
        return 0
    print(render(load_records(paths=paths), registry.suites(), "md"))
    return max(_report_skipped(paths.skipped), report_failed(paths.failed))


def report_failed(failed: list) -> int:
    """The end-of-run summary of models whose weights failed to load: exit status 1 if any (the
    other models ran and were written)."""
    if not failed:
        return 0
    print(f"evalbench: {len(failed)} model(s) failed to load and were not evaluated:", file=sys.stderr)
    for model in failed:
        print(f"  {model}", file=sys.stderr)
    return 1


def cmd_watch(args) -> int:
    from evalbench.tasks.loader import TaskRegistry
    from evalbench.watch import watch_folder

    registry = TaskRegistry(args.tasks_dir)
    tasks = _tasks(args, registry)
    if not tasks:
        raise EvalbenchError("watch: pass --suite or --tasks (what to evaluate each checkpoint on)")
    if args.interval <= 0:
        raise EvalbenchError(f"--interval: expected a number of seconds > 0, got {args.interval}")
    if args.until_idle is not None and args.until_idle < 0:
        raise EvalbenchError(f"--until-idle: expected a number of seconds >= 0, got {args.until_idle}")
    summary = watch_folder(
        args.folder, args.arch, tasks, _run_config(args), registry, name=args.name, pattern=args.pattern,
        interval=args.interval, until_idle=args.until_idle, report=args.report,
    )
    if summary is None:  # a torchrun rank other than 0
        return 0
    print(summary.describe())
    return report_failed(summary.failed)


def _report_skipped(skipped: list) -> int:
    """The end-of-run summary of modes not run for a missing split: exit status 1 if any, since
    the run wrote everything it could but not everything asked for."""
    if not skipped:
        return 0
    print(f"evalbench: {len(skipped)} result(s) skipped, their task naming a split its data lacks "
          "(fix splits: in the task file):", file=sys.stderr)
    for skip in skipped:
        print(f"  {skip}", file=sys.stderr)
    return 1


def cmd_tasks(args) -> int:
    import yaml

    from evalbench.tasks.loader import TaskFileError, TaskRegistry, is_task_file, load_task_file

    if args.tasks_command == "list":
        registry = TaskRegistry(args.tasks_dir)
        names = registry.names(args.pattern)
        if not names:
            print(f"no tasks match {args.pattern!r}" if args.pattern else "no tasks")
            return 0
        width = max(map(len, names))
        for name in names:
            task = registry.get(name)
            note = f"  [unavailable: {task.spec.unavailable}]" if task.spec.unavailable else ""
            print(f"{name:<{width}}  v{task.spec.version:<4} {task.spec.description}{note}")
        if args.pattern is None:  # the place docs/errors.md sends a user after "unknown suite"
            suites = registry.suites()
            width = max(map(len, suites), default=0)
            print("\nsuites (evalbench run --suite NAME):")
            for suite in suites.values():
                print(f"  {suite.name:<{width}}  {len(suite.tasks):>3} tasks  {suite.description}")
        return 0
    if args.tasks_command == "show":
        task = TaskRegistry(args.tasks_dir).get(args.name)
        print(f"# {task.path}\n" + yaml.safe_dump(task.resolved, sort_keys=False, allow_unicode=True), end="")
        return 0
    files: list[Path] = []
    problems: list[str] = []
    for path in args.paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.y*ml") if is_task_file(p.relative_to(path)))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: not found")
    for f in files:
        try:
            load_task_file(f)
        except TaskFileError as e:
            problems += e.problems
        except EvalbenchError as e:
            problems.append(str(e))
    for line in problems:
        print(line)
    if problems:
        return 2
    print(f"{len(files)} task file(s) valid")
    return 0


def cmd_models(args) -> int:
    from evalbench.models import BUNDLED
    from evalbench.models.openclip import list_models

    for name in BUNDLED:
        if args.pattern is None or fnmatch.fnmatch(name, args.pattern):
            print(f"{name}  (bundled, offline)")
    for arch, tags in list_models(args.pattern):
        print(f"{arch}  {', '.join(tags) if tags else '(random weights only)'}")
    return 0


def cmd_report(args) -> int:
    from evalbench.fileio import atomic_write_text
    from evalbench.report import CompareOptions, build_report, load_records, render_report
    from evalbench.report.plots import INSTALL_HINT, have_matplotlib, write_plots
    from evalbench.report.published import DEFAULT_TOLERANCE
    from evalbench.tasks.loader import TaskRegistry

    options = CompareOptions(resamples=args.resamples, seed=args.seed)
    tolerance = args.published_tolerance
    if args.published and tolerance is None:
        tolerance = DEFAULT_TOLERANCE
    report = build_report(load_records(args.results_dir), TaskRegistry(args.tasks_dir).suites(), args.baseline, options,
                          published_tolerance=tolerance, per_group=args.per_group)
    text = render_report(report, args.format)
    if args.plots and not have_matplotlib():  # checked before anything is written
        raise EvalbenchError(f"--plots: needs matplotlib ({INSTALL_HINT})")
    if args.tensorboard:
        from evalbench.report.tensorboard import write_tensorboard

        runs = write_tensorboard(report, args.tensorboard)
        log.info("wrote TensorBoard scalars of %d run(s) to %s", len(runs), args.tensorboard)
    if args.plots:
        written = write_plots(report, args.plots)
        log.info("wrote %d plots to %s", len(written), args.plots)
    if args.output:
        atomic_write_text(args.output, text)
        log.info("wrote %s", args.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_probe(args) -> int:
    import json

    from evalbench.probe import few_shot_probe, linear_probe, make_backend
    from evalbench.probe.features_file import read_features_npz

    splits = read_features_npz(args.features)
    n_classes = int(max(y.max() for _, y in splits.values())) + 1
    backend = make_backend(args.backend, args.device)
    progress = not args.json and not args.quiet
    if args.shots:
        names = [str(i) for i in range(n_classes)]
        result = few_shot_probe(*splits.values(), names, args.metric, args.shots, args.seeds, backend,
                                args.normalize, progress)
    else:
        result = linear_probe(*splits.values(), n_classes, args.metric, backend, args.normalize, progress)
    if args.json:
        print(json.dumps(result))
    else:
        shown = {k: v for k, v in result.items() if k not in {"val_scores", "runs"}}
        for key, value in shown.items():
            print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")
    return 0


def cmd_cache(args) -> int:
    import pandas as pd

    from evalbench.config import default_cache_dir
    from evalbench.cache import clear_entries, list_entries

    root = args.cache_dir or default_cache_dir()
    if args.cache_command == "clear":
        removed = clear_entries(root, args.pattern)
        print(f"removed {len(removed)} cache entries from {root}")
        return 0
    rows = list_entries(root)
    if not rows:
        print(f"cache {root} is empty")
        return 0
    print(pd.DataFrame(rows).drop(columns="path").to_string(index=False))
    print(f"\n{root}: {sum(r['size_mb'] for r in rows):.1f} MB")
    return 0


COMMANDS = {"run": cmd_run, "watch": cmd_watch, "probe": cmd_probe, "tasks": cmd_tasks, "models": cmd_models, "cache": cmd_cache, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("evalbench: %(message)s"))
    log.handlers[:] = [handler]
    rank = int(os.environ.get("RANK", "0"))  # under torchrun, only rank 0 talks
    log.setLevel(logging.WARNING if args.quiet or rank else logging.INFO)
    log.propagate = False
    if args.command is None:
        args = parser.parse_args(["run", *(argv or sys.argv[1:])])
    try:
        return COMMANDS[args.command](args)
    except EvalbenchError as e:
        if args.debug:
            raise
        print(f"evalbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evalbench: interrupted", file=sys.stderr)
        return 130
