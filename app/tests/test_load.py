"""A burst of tasks on a worker with the threads pool's many threads: every one runs.

The worker here is the one the role deploys by default (threads pool, 64 threads, task
events on, publisher confirms), started on a queue and download directory of its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import delete_queue, start_worker, stop_worker
from support import LoopbackServer
from testenv import CONFIG_FILE, DOWNLOAD_DIR, QUEUE, RUN_ID, WORK_DIR

BURST = 2000
THREADS = 64
DEADLINE = 120  # seconds for the whole burst; it takes about 10 s when nothing is wrong


def test_a_threads_pool_worker_runs_a_burst_of_tasks_to_the_end(
    broker: str, http_server: LoopbackServer
) -> None:
    """Before the fix, the worker froze after a few hundred tasks: a pool thread waited for
    the broker's confirm of an event while the main thread, which also reads the events'
    connection, had taken it. Each download waits 50 ms for the server, so up to 64 run at
    once and events flow from many threads at a time."""
    queue, files = f"{QUEUE}-burst", WORK_DIR / "burst-files"
    files.mkdir()
    config = WORK_DIR / "burst.conf"
    text = CONFIG_FILE.read_text(encoding="utf-8")
    text = text.replace(f"queue = {QUEUE}\n", f"queue = {queue}\n")
    text = text.replace(f"download_dir = {DOWNLOAD_DIR}\n", f"download_dir = {files}\n")
    assert queue in text and str(files) in text
    config.write_text(text, encoding="utf-8")
    env = {**os.environ, "DOWNLOADER_CONFIG": str(config)}
    node = f"burst-{RUN_ID}@{socket.gethostname()}"
    proc = start_worker(WORK_DIR / "burst-worker.log", node, THREADS, env)
    try:
        client = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("burst_client.py")),
                str(BURST),
                http_server.url("/slow/0.05"),
                str(DEADLINE),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE + 60,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        report = json.loads(client.stdout)
        assert report == {**report, "succeeded": BURST, "failed": 0}, report
        written = sorted(files.iterdir())
        assert len(written) == BURST
        assert {path.read_bytes() for path in written} == {b"finally\n"}
    finally:
        stop_worker(proc)
        delete_queue(queue)
