"""The test run's environment, set up once at import (before ``downloaderApp`` is imported).

A configuration file in a fresh temporary directory, pointed to by ``DOWNLOADER_CONFIG``, with a
queue name unique to this run (so a stale queue, or a concurrent run on the same broker, cannot
interfere), loopback allowed, small limits and short timeouts. Other ``DOWNLOADER_*`` variables
of the caller's environment are removed, except the tests' own:
  DOWNLOADER_TEST_BROKER_URL    the RabbitMQ to use (default pyamqp://guest:guest@localhost:5672//)
  DOWNLOADER_TEST_KEEP_WORKDIR  set to 1 to keep the temporary directory (worker.log, files)
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

RUN_ID = uuid.uuid4().hex[:10]
BROKER_URL = os.environ.get("DOWNLOADER_TEST_BROKER_URL") or "pyamqp://guest:guest@localhost:5672//"
QUEUE = f"downloader-test-{RUN_ID}"
WORK_DIR = Path(tempfile.mkdtemp(prefix="downloader-tests-"))
DOWNLOAD_DIR = WORK_DIR / "files"
CONFIG_FILE = WORK_DIR / "downloader.conf"
NODE_PREFIX = f"test-{RUN_ID}@"
KEEP_WORK_DIR = os.environ.get("DOWNLOADER_TEST_KEEP_WORKDIR", "") not in ("", "0")

# Values of the test configuration (see CONFIG_FILE).
MAX_BYTES = 1024 * 1024
READ_TIMEOUT = 1.0
MAX_REDIRECTS = 3
MAX_RETRIES = 1
LIST_TIMEOUT = 0.5

DOWNLOAD_DIR.mkdir()
CONFIG_FILE.write_text(
    f"""\
# written by tests/conftest.py
[downloader]
broker_url = {BROKER_URL}
result_backend = rpc://
download_dir = {DOWNLOAD_DIR}
allowed_networks = 127.0.0.0/8
max_bytes = {MAX_BYTES}
connect_timeout = 2
read_timeout = {READ_TIMEOUT:g}
max_redirects = {MAX_REDIRECTS}
max_retries = {MAX_RETRIES}
list_timeout = {LIST_TIMEOUT:g}
retry_backoff = 0.2
queue = {QUEUE}
""",
    encoding="utf-8",
)
for _name in list(os.environ):
    if _name.startswith("DOWNLOADER_") and not _name.startswith("DOWNLOADER_TEST_"):
        del os.environ[_name]
os.environ["DOWNLOADER_CONFIG"] = str(CONFIG_FILE)
