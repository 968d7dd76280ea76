"""The built wheel on its own: it carries the built-in tasks, suites and bundled checkpoints, and
evalbench installed from it into a fresh environment lists, validates and runs tasks from a
folder outside the repository.

Offline, as CI is: the wheel is built without build isolation (setuptools from this environment),
installed with ``--no-index --no-deps``, and the fresh venv borrows this environment's
dependencies through a ``.pth`` file. That file names site-packages folders only, whose own
``.pth`` files (among them an editable install of this repository) Python does not process, and
no PYTHONPATH is passed on, so the only evalbench the fresh venv can import is the wheel's;
``test_imported_evalbench_is_the_wheel`` checks exactly that.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"
ASSETS = REPO / "evalbench" / "assets"
# Top-level folders of a checkout that are not source (environments, outputs, build leftovers).
NOT_SOURCE = {".git", ".venv", "build", "dist", "results", ".cache", ".whl", ".pytest_cache"}
TIMEOUT = 300


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    python: Path
    evalbench: Path  # the console script pip wrote into the venv
    outside: Path  # a working folder outside the repository
    env: dict


def _run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=TIMEOUT, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _ignore(folder: str, names: list[str]) -> set[str]:
    at_root = Path(folder).resolve() == REPO
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (at_root and n in NOT_SOURCE)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so the build leaves no build/ or *.egg-info in the checkout.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_ignore)
    pip_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--wheel-dir", root / "dist", source],
        env=pip_env,
    )
    (wheel,) = (root / "dist").glob("evalbench-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    # This environment's pip (22.3+ for --python) installs into the fresh venv: no ensurepip needed.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel], env=pip_env)
    # Only now the dependencies: had pip seen them, it would have seen this checkout's evalbench too.
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    borrowed = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (Path(purelib) / "_evalbench_test_deps.pth").write_text("".join(f"{p}\n" for p in borrowed))

    outside = root / "elsewhere"
    outside.mkdir()
    env = pip_env | {"EVALBENCH_CACHE": str(root / "default-cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return Installed(wheel, venv, python, bin_dir / "evalbench", outside, env)


def _evalbench(installed: Installed, *args) -> subprocess.CompletedProcess:
    return _run([installed.evalbench, *args], cwd=installed.outside, env=installed.env)


def _repo_task_names() -> set[str]:
    return {p.stem for p in TASKS.rglob("*.yaml") if "suites" not in p.parts and not p.name.startswith("_")}


def test_wheel_carries_tasks_suites_and_assets(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    yaml_files = {f"evalbench/builtin_tasks/{p.relative_to(TASKS).as_posix()}" for p in TASKS.rglob("*.yaml")}
    assert "evalbench/builtin_tasks/suites/offline.yaml" in yaml_files
    assert yaml_files <= names, sorted(yaml_files - names)
    assets = {f"evalbench/assets/{p.name}" for p in ASSETS.iterdir() if p.is_file()}
    assert {"evalbench/assets/demo-final.safetensors", "evalbench/assets/demo-clip.json"} <= assets <= names
    # The mapping must not also ship tasks/ as a top-level package of its own.
    assert not [n for n in names if n.startswith("tasks/")]


def _installed_tasks_dir(installed: Installed) -> Path:
    code = "import evalbench.tasks.loader as l; print(l.BUILTIN_TASKS_DIR)"
    return Path(_run([installed.python, "-c", code], cwd=installed.outside, env=installed.env).stdout.strip())


def test_imported_evalbench_is_the_wheel(installed):
    code = "import evalbench; print(evalbench.__file__)"
    module = Path(_run([installed.python, "-c", code], cwd=installed.outside, env=installed.env).stdout.strip())
    tasks_dir = _installed_tasks_dir(installed)
    for path in (module, tasks_dir):
        assert path.is_relative_to(installed.venv.resolve()) and not path.is_relative_to(REPO), path
    assert tasks_dir == module.parent / "builtin_tasks"


def test_tasks_list_shows_builtin_tasks_and_suites(installed):
    out = _evalbench(installed, "tasks", "list").stdout
    tasks_part, _, suites_part = out.partition("\nsuites")
    listed = {line.split()[0] for line in tasks_part.splitlines() if line.strip()}
    assert _repo_task_names() <= listed, sorted(_repo_task_names() - listed)
    suites = {line.split()[0] for line in suites_part.splitlines()[1:] if line.strip()}
    assert suites == {p.stem for p in (TASKS / "suites").glob("*.yaml")}
    assert "offline" in suites


def test_tasks_validate_the_installed_tasks(installed):
    out = _evalbench(installed, "tasks", "validate", _installed_tasks_dir(installed)).stdout
    assert f"{len(_repo_task_names())} task file(s) valid" in out


def test_run_with_relative_folders_outside_the_repository(installed):
    # Relative --results-dir/--cache-dir, as a user typing in their own folder would give them.
    _evalbench(
        installed, "run", "--model", "demo-final", "--tasks", "digits", "--mode", "zeroshot", "--limit", "50",
        "--results-dir", "results", "--cache-dir", "cache", "--no-progress",
    )
    record = json.loads((installed.outside / "results" / "demo-final" / "digits.json").read_text())
    # demo-final scores 78% on the 500 test digits (README); chance is 10%.
    assert record["results"]["zeroshot"]["acc1"] >= 0.5
    assert (installed.outside / "cache" / "generated").is_dir(), "the data was not generated under --cache-dir"


def test_python_api_from_outside_the_repository(installed):
    """The README's one-liner: ``import evalbench`` and ``evaluate`` print a table from any folder;
    a bad setting is one clear ValueError naming it."""
    script = (
        "import evalbench\n"
        "t = evalbench.evaluate(['demo-final'], ['digits'], modes=['zeroshot'], limit=50, progress=False)\n"
        "print(t.to_csv(index=False))\n"
        "try:\n"
        "    evalbench.evaluate(['demo-final'], ['digits'], modes=['zero-shot'])\n"
        "except ValueError as e:\n"
        "    print('ERROR', type(e).__name__, e)\n"
    )
    out = _run([installed.python, "-c", script], cwd=installed.outside, env=installed.env).stdout
    rows = [line.split(",") for line in out.splitlines() if line.startswith("demo-final,digits,zeroshot,")]
    assert {r[3] for r in rows} >= {"acc1", "main_score"}
    assert float(next(r[4] for r in rows if r[3] == "acc1")) >= 0.5
    assert "ERROR EvalbenchError modes: 'zero-shot' is not allowed (allowed: zeroshot, linear_probe)" in out
    assert (installed.outside / "results" / "demo-final" / "digits.json").is_file()
