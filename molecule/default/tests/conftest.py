"""The fixtures that several test modules use. The cluster scenario runs this directory's
cluster-wide tests as well, with this file."""

from __future__ import annotations

import pytest
from celerylab import WEB, host


@pytest.fixture(scope="session")
def sample_sha256() -> str:
    """The SHA-256 of the web host's sample file, which the tutorial's downloads fetch."""
    return str(host(WEB).file("/srv/www/sample.bin").sha256sum)
