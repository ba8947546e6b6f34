"""The ``downloader`` command, run as a subprocess against the real broker and worker."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from support import BIN, FIXED_BODY, LoopbackServer, closed_port, downloader


def test_console_script_is_installed() -> None:
    assert BIN.exists() or shutil.which("downloader"), "pip install -e . should create it"


def test_version_and_help() -> None:
    proc = downloader("--version")
    assert proc.returncode == 0 and "1.0.0" in proc.stdout
    proc = downloader("--help")
    assert proc.returncode == 0
    for command in ("submit", "list", "status"):
        assert command in proc.stdout


def test_usage_error_exits_2() -> None:
    proc = downloader("submit", "http://example.com/")
    assert proc.returncode == 2
    assert "NAME" in proc.stderr


@pytest.mark.usefixtures("worker")
def test_submit_wait_json_success(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    name = f"cli-{unique}.bin"
    proc = downloader("submit", http_server.url("/fixed"), name, "--wait", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"task_id", "state", "result"}
    assert out["state"] == "SUCCESS"
    assert out["result"]["filename"] == name
    assert out["result"]["bytes"] == len(FIXED_BODY)
    assert (download_dir / name).read_bytes() == FIXED_BODY


@pytest.mark.usefixtures("worker")
def test_submit_wait_human_success(http_server: LoopbackServer, unique: str) -> None:
    proc = downloader("submit", http_server.url("/text"), f"cli-{unique}.txt", "--wait", "30")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("downloaded ") and "6 bytes" in proc.stdout


@pytest.mark.usefixtures("worker")
def test_submit_wait_failure_exits_1(http_server: LoopbackServer, unique: str) -> None:
    proc = downloader("submit", http_server.url("/fixed"), "../escape", "--wait", "30", "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["state"] == "FAILURE"
    assert out["error"]["type"] == "InvalidFilename"
    assert "path separator" in out["error"]["message"]
    assert "InvalidFilename" in proc.stderr


@pytest.mark.usefixtures("worker")
def test_submit_overwrite_flag(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    name = f"cli-ow-{unique}"
    assert downloader("submit", http_server.url("/fixed"), name, "--wait", "30").returncode == 0
    refused = downloader("submit", http_server.url("/text"), name, "--wait", "30")
    assert refused.returncode == 1 and "FileExists" in refused.stderr
    replaced = downloader("submit", http_server.url("/text"), name, "--overwrite", "--wait", "30")
    assert replaced.returncode == 0, replaced.stderr
    assert (download_dir / name).read_bytes() == b"hello\n"


@pytest.mark.usefixtures("worker")
def test_submit_wait_timeout_exits_3(http_server: LoopbackServer, unique: str) -> None:
    proc = downloader(
        "submit", http_server.url(f"/slow/2?{unique}"), f"cli-{unique}", "--wait", "0.3"
    )
    assert proc.returncode == 3
    assert "did not finish within 0.3 s" in proc.stderr


@pytest.mark.usefixtures("worker")
def test_submit_without_wait_prints_task_id(http_server: LoopbackServer, unique: str) -> None:
    proc = downloader("submit", http_server.url("/text"), f"cli-nowait-{unique}", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["state"] == "PENDING" and len(out["task_id"]) == 36
    human = downloader("submit", http_server.url("/text"), f"cli-nowait2-{unique}")
    assert human.returncode == 0 and human.stdout.startswith("submitted task ")


def test_list_json_and_human(worker: str, http_server: LoopbackServer, unique: str) -> None:
    name = f"cli-list-{unique}.bin"
    assert downloader("submit", http_server.url("/fixed"), name, "--wait", "30").returncode == 0
    proc = downloader("list", "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert {"name": name, "host": socket.gethostname(), "bytes": len(FIXED_BODY)} in records
    human = downloader("list")
    assert human.returncode == 0
    line = next(line for line in human.stdout.splitlines() if line.endswith(name))
    assert socket.gethostname() in line and "10.0 KiB" in line


def test_status_json(worker: str) -> None:
    proc = downloader("status", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert worker in out["workers"] and out["count"] == len(out["workers"])
    human = downloader("status")
    assert human.returncode == 0 and f"{worker}: OK" in human.stdout


def test_no_workers_exit_4() -> None:
    """A broker nobody consumes from (kombu's in-memory transport): nobody answers."""
    env = {"DOWNLOADER_BROKER_URL": "memory://"}
    proc = downloader("status", "--json", "--timeout", "0.3", env=env)
    assert proc.returncode == 4
    assert json.loads(proc.stdout) == {"workers": [], "count": 0}
    assert "no worker answered" in proc.stderr
    proc = downloader("list", "--timeout", "0.3", env=env)
    assert proc.returncode == 4 and "no worker answered" in proc.stderr


def test_broker_unreachable_exit_5() -> None:
    env = {"DOWNLOADER_BROKER_URL": f"pyamqp://guest:guest@127.0.0.1:{closed_port()}//"}
    proc = downloader("status", env=env)
    assert proc.returncode == 5
    assert "cannot reach the broker" in proc.stderr


def test_configuration_error_exit_2(tmp_path: Path) -> None:
    proc = downloader("status", env={"DOWNLOADER_MAX_BYTES": "many"})
    assert proc.returncode == 2
    assert "max_bytes" in proc.stderr and "DOWNLOADER_MAX_BYTES" in proc.stderr
    missing = str(tmp_path / "missing.conf")
    proc = downloader("list", env={"DOWNLOADER_CONFIG": missing})
    assert proc.returncode == 2 and missing in proc.stderr
