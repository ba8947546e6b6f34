"""A Python file of the project that is not in an importable package (a role's or playbook's
filter plugin, a module, a test helper), loaded as a module by its path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[2]


def load(path: str | Path) -> ModuleType:
    """The file at PATH (absolute, or relative to the project's root) as a module named after it."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
