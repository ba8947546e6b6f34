"""The package version (kept equal to ``version`` in pyproject.toml; a test checks it)."""

from __future__ import annotations

__version__ = "1.0.0"
