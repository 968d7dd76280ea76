"""The command line: listing and showing tasks, listing models, help for every command."""

from __future__ import annotations

import argparse
import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evalbench.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def out_of(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_tasks_list_with_a_wildcard(task_dir, capsys):
    rc, out, _ = out_of(capsys, ["tasks", "list", "colours-[fw]*", "--tasks-dir", str(task_dir)])
    assert rc == 0
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert names == ["colours-folder", "colours-wds"]
    assert all("three colours" in line for line in out.splitlines() if line.strip())

    rc, out, _ = out_of(capsys, ["tasks", "list", "colours-*", "--tasks-dir", str(task_dir)])
    assert rc == 0
    assert sorted(line.split()[0] for line in out.splitlines() if line.strip()) == [
        "colours-folder",
        "colours-hf",
        "colours-wds",
    ]


def test_tasks_list_without_pattern_includes_extra_and_builtin_tasks(task_dir, capsys):
    rc, out, _ = out_of(capsys, ["tasks", "list", "--tasks-dir", str(task_dir)])
    assert rc == 0
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"colours-folder", "colours-wds", "colours-hf"} <= names
    builtin = {p.stem for p in (REPO / "tasks").rglob("*.yaml") if "suites" not in p.parts and not p.name.startswith("_")}
    assert (names - {"colours-folder", "colours-wds", "colours-hf"}) & builtin, "built-in tasks missing"


def test_tasks_list_pattern_matching_nothing(task_dir, capsys):
    rc, out, _ = out_of(capsys, ["tasks", "list", "zzz-no-such-*", "--tasks-dir", str(task_dir)])
    assert rc == 0
    assert "colours" not in out


def test_tasks_show_prints_the_resolved_yaml(task_dir, capsys):
    rc, out, _ = out_of(capsys, ["tasks", "show", "colours-hf", "--tasks-dir", str(task_dir)])
    assert rc == 0
    assert yaml.safe_load(out) == yaml.safe_load((task_dir / "colours-hf.yaml").read_text())
    assert str(task_dir / "colours-hf.yaml") in out  # says which file it came from


def test_unknown_task_is_one_error_line(task_dir, capsys):
    rc, _, err = out_of(capsys, ["tasks", "show", "colours-fold", "--tasks-dir", str(task_dir)])
    assert rc == 2
    assert len(err.splitlines()) == 1 and "colours-fold" in err
    assert "colours-folder" in err  # the close match is suggested


def test_models_list_with_a_wildcard(capsys):
    import open_clip

    rc, out, _ = out_of(capsys, ["models", "list", "ViT-B-32*"])
    assert rc == 0
    lines = [line for line in out.splitlines() if line.strip()]
    vit_b_32 = next(line for line in lines if line.split()[0] == "ViT-B-32")
    assert "laion2b_s34b_b79k" in vit_b_32 and "openai" in vit_b_32
    archs = [line.split()[0] for line in lines if "bundled" not in line]
    assert archs and all(fnmatch.fnmatch(a, "ViT-B-32*") for a in archs)
    assert set(archs) == set(fnmatch.filter(open_clip.list_models(), "ViT-B-32*"))


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every (sub)command path of the parser, the top level included."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


COMMANDS = sorted(set(_commands(build_parser())))


def test_the_parser_has_the_core_commands():
    assert {("run",), ("tasks", "list"), ("tasks", "show"), ("tasks", "validate"), ("models", "list"), ("report",)} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "evalbench")
def test_every_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text.lower()
    assert "usage:" in text


def test_python_dash_m_evalbench_help():
    proc = subprocess.run(
        [sys.executable, "-m", "evalbench", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout.lower()
    assert "run" in proc.stdout and "report" in proc.stdout


def test_python_dash_m_evalbench_error_exit_code(tmp_path):
    """The real process exits with 2 (not 1, not a traceback) on a user error."""
    proc = subprocess.run(
        [sys.executable, "-m", "evalbench", "tasks", "validate", str(tmp_path / "absent.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
