"""Reading task files: YAML, ``include:`` merging, validation, discovery by name, and suites."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.resources
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalbench.errors import EvalbenchError
from evalbench.tasks.spec import TaskSpec


def builtin_tasks_dir() -> Path:
    """The folder of built-in task files and ``suites/``, wherever evalbench was installed from.

    A built wheel carries them as ``evalbench/builtin_tasks/`` (pyproject.toml maps the
    repository's top-level ``tasks/`` folder there at build time, so there is one copy to edit).
    A source checkout, run as ``python -m evalbench`` or installed editable (``pip install -e``),
    has no such folder and reads ``tasks/`` next to the package. The returned folder may be missing
    only in a broken install; :class:`TaskRegistry` reports that.
    """
    packaged = importlib.resources.files("evalbench") / "builtin_tasks"
    # evalbench is a regular package, so on any pip install (never zipped) this is a real Path.
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged.resolve()
    return Path(__file__).resolve().parents[2] / "tasks"


BUILTIN_TASKS_DIR = builtin_tasks_dir()


class TaskFileError(EvalbenchError):
    """One or more problems in task files; ``problems`` holds one ``file: field: what`` line each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


@dataclass(frozen=True)
class Task:
    """A validated task: its spec, the file it came from, and the hash of its resolved YAML."""

    spec: TaskSpec
    path: Path
    resolved: dict
    hash: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dir(self) -> Path:
        return self.path.parent


class SuiteSpec(BaseModel):
    """A named list of tasks. ``aggregates`` (optional) names means over some of its tasks that
    the report prints beside the suite mean (DataComp's "VTAB", "Retrieval", ...); ``all``
    stands for every task of the suite."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    tasks: list[str] = Field(min_length=1)
    aggregates: dict[str, list[str] | Literal["all"]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _aggregates_in_suite(self) -> "SuiteSpec":
        for name, tasks in self.aggregates.items():
            if tasks == "all":
                continue
            if not tasks:
                raise ValueError(f"aggregates.{name}: lists no task")
            outside = [t for t in tasks if t not in self.tasks]
            if outside:
                raise ValueError(f"aggregates.{name}: task '{outside[0]}' is not in the suite's tasks")
            if len(set(tasks)) != len(tasks):
                raise ValueError(f"aggregates.{name}: a task is listed twice")
        return self

    def aggregate_tasks(self) -> dict[str, list[str]]:
        """Each aggregate's tasks, with ``all`` expanded."""
        return {name: list(self.tasks) if tasks == "all" else list(tasks) for name, tasks in self.aggregates.items()}


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a file, with errors as one line naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError([f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskFileError([f"{path}: cannot read: {e}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TaskFileError([f"{path}: {where}invalid YAML: {problem}"]) from None


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: mappings merge recursively, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_includes(path: Path, _stack: tuple[Path, ...] = ()) -> dict:
    """The mapping in ``path`` with its ``include:`` chain merged in; a cycle is an error."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(p.name for p in (*_stack, path))
        raise TaskFileError([f"{_stack[0]}: include: cycle: {chain}"])
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise TaskFileError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    include = data.pop("include", None)
    if include is None:
        return data
    if not isinstance(include, str):
        raise TaskFileError([f"{path}: include: expected a path, got {type(include).__name__}"])
    target = path.parent / include
    if not target.is_file():
        raise TaskFileError([f"{path}: include: file not found: {target}"])
    return deep_merge(resolve_includes(target, (*_stack, path)), data)


def _pydantic_problems(path: Path, err: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for e in err.errors():
        # A key with control characters is shown escaped, so the problem stays one line.
        parts = [str(p) if str(p).isprintable() else repr(str(p)) for p in e["loc"]]
        field = prefix + ".".join(p for p in parts if not p.startswith("function-"))
        # Union members add their type name to the location; drop those for a readable path.
        field = re.sub(r"\.(constrained-str|str|ValFraction|list\[str\]|int|float)\b", "", field)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{path}: {field or '(top)'}: {msg}")
    return problems


def validate_dataset(path: Path, dataset: Any) -> list[str]:
    """Problems in the ``dataset:`` mapping, checked against its source's Config."""
    from evalbench.sources.base import source_class, source_kinds

    if not isinstance(dataset, dict):
        return [f"{path}: dataset: expected a mapping"]
    kind = dataset.get("source")
    kinds = source_kinds()
    if not isinstance(kind, str) or kind not in kinds:
        return [f"{path}: dataset.source: unknown source {kind!r} (known: {', '.join(kinds)})"]
    try:
        source_class(kind).Config.model_validate(dataset)
    except ValidationError as e:
        return _pydantic_problems(path, e, "dataset.")
    except EvalbenchError as e:
        return [f"{path}: {e}"]
    return []


def load_task_file(path: str | Path) -> Task:
    """Read, merge and validate one task file; raise TaskFileError listing every problem."""
    path = Path(path).resolve()
    resolved = resolve_includes(path)
    problems: list[str] = []
    spec = None
    try:
        spec = TaskSpec.model_validate(resolved)
    except ValidationError as e:
        problems += _pydantic_problems(path, e)
    if "dataset" in resolved:
        problems += validate_dataset(path, resolved["dataset"])
        subsets = resolved.get("subsets")
        if isinstance(subsets, dict) and isinstance(resolved["dataset"], dict):
            for name, override in subsets.items():
                if not isinstance(override, dict):
                    problems.append(f"{path}: subsets.{name}: expected a mapping of dataset keys")
                    continue
                merged = deep_merge(resolved["dataset"], override)
                problems += [p.replace(": dataset.", f": subsets.{name}.", 1)
                             for p in validate_dataset(path, merged)]
    if problems:
        raise TaskFileError(problems)
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]
    return Task(spec=spec, path=path, resolved=resolved, hash=digest)


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def is_task_file(path: Path) -> bool:
    """Task files are ``*.yaml`` outside ``suites/``; files named ``_*.yaml`` are include-only bases."""
    return path.suffix in {".yaml", ".yml"} and not path.name.startswith("_") and "suites" not in path.parts


class TaskRegistry:
    """Task files found under the built-in tasks folder (:func:`builtin_tasks_dir`) and any extra folders.

    A name given to :meth:`get` may also be the path of a ``.yaml`` file.
    """

    def __init__(self, extra_dirs: list[str | Path] = (), builtin: bool = True):
        if builtin and not BUILTIN_TASKS_DIR.is_dir():
            # Without this, a wheel built without its task data would list no tasks, silently.
            raise EvalbenchError(f"built-in tasks not found at {BUILTIN_TASKS_DIR}: reinstall evalbench")
        self.dirs = ([BUILTIN_TASKS_DIR] if builtin else []) + [Path(d).resolve() for d in extra_dirs]
        for d in self.dirs[1 if builtin else 0 :]:
            if not d.is_dir():
                raise EvalbenchError(f"--tasks-dir: folder not found: {d}")
        self._files: dict[str, Path] | None = None

    def task_files(self) -> list[Path]:
        files = []
        for d in self.dirs:
            if d.is_dir():
                files += sorted(p for p in d.rglob("*.y*ml") if is_task_file(p.relative_to(d)))
        return files

    def _index(self) -> dict[str, Path]:
        if self._files is None:
            index: dict[str, Path] = {}
            for f in self.task_files():
                data = read_yaml(f)
                name = data.get("name") if isinstance(data, dict) else None
                name = name or resolve_includes(f).get("name") or f.stem
                if name in index and index[name] != f:
                    raise EvalbenchError(f"{f}: name: task '{name}' is already defined in {index[name]}")
                index[name] = f
            self._files = index
        return self._files

    def names(self, pattern: str | None = None) -> list[str]:
        names = [n for n in self._index() if pattern is None or fnmatch.fnmatchcase(n, pattern)]
        return sorted(names, key=natural_key)

    def get(self, name: str) -> Task:
        if name.endswith((".yaml", ".yml")) or Path(name).is_file():
            return load_task_file(name)
        index = self._index()
        if name not in index:
            close = fnmatch.filter(index, f"*{name}*")[:5]
            hint = f" (did you mean: {', '.join(close)}?)" if close else " (see `evalbench tasks list`)"
            raise EvalbenchError(f"--tasks: unknown task '{name}'{hint}")
        return load_task_file(index[name])

    def suites(self) -> dict[str, SuiteSpec]:
        suites: dict[str, SuiteSpec] = {}
        for d in self.dirs:
            for f in sorted((d / "suites").glob("*.y*ml")):
                data = read_yaml(f)
                try:
                    suite = SuiteSpec.model_validate(data)
                except ValidationError as e:
                    raise TaskFileError(_pydantic_problems(f, e)) from None
                suites[suite.name] = suite
        return suites

    def suite(self, name: str) -> SuiteSpec:
        suites = self.suites()
        if name not in suites:
            raise EvalbenchError(f"--suite: unknown suite '{name}' (known: {', '.join(sorted(suites)) or 'none'})")
        return suites[name]
