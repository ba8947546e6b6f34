"""Test fixtures: a real RabbitMQ (never mocked), a real worker subprocess, loopback HTTP.

``testenv`` (imported first) writes the test configuration and sets ``DOWNLOADER_CONFIG``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# isort: off
# testenv first: it sets DOWNLOADER_CONFIG before downloaderApp is imported.
from testenv import BROKER_URL, DOWNLOAD_DIR, KEEP_WORK_DIR, NODE_PREFIX, QUEUE, WORK_DIR
from support import LoopbackServer

from downloaderApp import app

# isort: on


def _safe(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session", autouse=True)
def _cleanup_work_dir() -> Iterator[None]:
    yield
    if KEEP_WORK_DIR:
        print(f"\nkept the test directory {WORK_DIR}", file=sys.stderr)
    else:
        shutil.rmtree(WORK_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def broker() -> str:
    """The broker URL, after checking RabbitMQ answers; FAILS (not skips) when it does not."""
    from kombu import Connection

    conn = Connection(BROKER_URL, connect_timeout=5)
    error = None
    try:
        conn.connect()
    except Exception as exc:
        error = exc
    finally:
        conn.release()
    if error is not None:
        pytest.fail(
            f"RabbitMQ is not reachable at {_safe(BROKER_URL)}: {error!r}. These tests need a "
            "real broker: start one (e.g. `rabbitmq-server -detached`) or point "
            "DOWNLOADER_TEST_BROKER_URL at one.",
            pytrace=False,
        )
    return BROKER_URL


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # warm shutdown: finishes running tasks
    try:
        proc.wait(timeout=20)
        return
    except subprocess.TimeoutExpired:
        pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def delete_queue(name: str) -> None:
    from kombu import Connection

    try:
        with Connection(BROKER_URL, connect_timeout=5) as conn:
            channel = conn.default_channel
            channel.queue_delete(name)
            channel.exchange_delete(name)
    except Exception as exc:  # leave a stray test queue rather than hide the test result
        print(f"could not delete test queue {name}: {exc!r}", file=sys.stderr)


def start_worker(
    log_path: Path, node_name: str, concurrency: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``celery -A downloaderApp worker`` (threads pool) and wait until it answers a
    ping as ``node_name``; fails the test (with the worker's log) when it does not."""
    cmd = [
        sys.executable, "-m", "celery", "-A", "downloaderApp", "worker",
        "--pool", "threads", "-c", str(concurrency), "-n", node_name,
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=WORK_DIR,
            env=env if env is not None else dict(os.environ),
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"the worker exited with status {proc.returncode}:\n{_tail(log_path)}",
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(f"the worker did not answer pings in 60 s:\n{_tail(log_path)}")
            for reply in app.control.ping(timeout=0.5) or []:
                if node_name in reply:
                    return proc
    except BaseException:
        stop_worker(proc)
        raise


@pytest.fixture(scope="session")
def worker(broker: str) -> Iterator[str]:
    """A real ``celery -A downloaderApp worker`` subprocess; yields its node name."""
    node = f"{NODE_PREFIX}{socket.gethostname()}"
    proc = start_worker(WORK_DIR / "worker.log", node, concurrency=8)
    try:
        yield node
    finally:
        stop_worker(proc)
        delete_queue(QUEUE)


@pytest.fixture(scope="session")
def http_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A fresh token for file names and request paths."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def download_dir() -> Path:
    return DOWNLOAD_DIR
