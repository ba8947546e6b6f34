"""The shared test library (molecule/shared/tests/celerylab.py) on the import path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule/shared/tests"))
