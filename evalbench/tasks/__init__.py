"""Task registry: YAML task files, their schema, discovery and suites."""

from evalbench.tasks.loader import TaskRegistry, load_task_file
from evalbench.tasks.spec import TaskSpec

__all__ = ["TaskRegistry", "TaskSpec", "load_task_file"]
