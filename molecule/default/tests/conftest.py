"""The shared test library (molecule/shared/tests/celerylab.py) on the import path, and the
fixtures that several test modules use. The cluster scenario runs this directory's cluster-wide
tests as well, with this file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "molecule/shared/tests"))

from celerylab import WEB, host


@pytest.fixture(scope="session")
def sample_sha256() -> str:
    """The SHA-256 of the web host's sample file, which the tutorial's downloads fetch."""
    return str(host(WEB).file("/srv/www/sample.bin").sha256sum)
