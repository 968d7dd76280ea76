"""Build glue for the one thing pyproject.toml cannot say: the package list.

``[tool.setuptools.package-dir]`` in pyproject.toml maps the package ``evalbench.builtin_tasks``
to the top-level ``tasks/`` folder, so that the one copy of the built-in task YAML that people
read and edit is also what the wheel ships. A mapped package lies outside ``evalbench/``, so
``packages.find`` cannot see it, and pyproject.toml takes either ``find`` or a fixed list, not
both; here it is the packages found under ``evalbench/`` plus the mapped one.
"""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["evalbench", "evalbench.*"]), "evalbench.builtin_tasks"])
