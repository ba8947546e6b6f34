"""The systemd_started_after module (plugins/modules/systemd_started_after.py), run as Ansible
runs it, with a stand-in systemctl that reports a main process started at a chosen moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODULE = Path(__file__).parents[2] / "plugins/modules/systemd_started_after.py"

# systemctl show --property=MainPID,ExecMainStartTimestampMonotonic UNIT
STAND_IN = """#!/bin/sh
echo "MainPID=$MAIN_PID"
echo "ExecMainStartTimestampMonotonic=$STARTED_MONO"
"""


def run(tmp_path: Path, started_ago: float | None, paths: list[Path]) -> dict[str, Any]:
    """The module's result for a main process started STARTED_AGO seconds ago (None: not running)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "systemctl").write_text(STAND_IN)
    (bindir / "systemctl").chmod(0o755)
    mono = 0 if started_ago is None else int((time.clock_gettime(time.CLOCK_MONOTONIC) - started_ago) * 1e6)
    env = dict(
        os.environ,
        PATH=f"{bindir}:{os.environ['PATH']}",
        MAIN_PID="0" if started_ago is None else "4242",
        STARTED_MONO=str(mono),
    )
    args = tmp_path / "args.json"
    params = {"unit": "rabbitmq-server", "paths": [str(p) for p in paths], "_ansible_check_mode": True}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    argv = [sys.executable, str(MODULE), str(args)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def conf_dir(tmp_path: Path, age: float) -> Path:
    """/etc/rabbitmq as a test tree whose every entry last changed AGE seconds ago."""
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    for path in (etc / "rabbitmq.conf", etc / "tls/server.key", etc / "inter_node_tls.config"):
        path.write_text("x")
    when = time.time() - age
    for path in [*etc.rglob("*"), etc]:
        os.utime(path, (when, when))
    return etc


def test_a_node_started_after_its_files_changed_runs_them(tmp_path: Path) -> None:
    etc = conf_dir(tmp_path, age=60)
    result = run(tmp_path, started_ago=30, paths=[etc, tmp_path / "no-cookie-yet"])
    assert result["changed"] is False
    assert result["started_after"] is True
    assert result["changed_at"] < result["started_at"]


def test_a_file_written_or_removed_since_the_start_is_noticed(tmp_path: Path) -> None:
    etc = conf_dir(tmp_path, age=60)
    (etc / "tls/server.key").write_text("new key")
    assert run(tmp_path, started_ago=30, paths=[etc])["started_after"] is False

    etc = conf_dir(tmp_path / "again", age=60)
    (etc / "inter_node_tls.config").unlink()  # changes only the directory's time
    assert run(tmp_path, started_ago=30, paths=[etc])["started_after"] is False


def test_a_node_that_does_not_run_never_runs_the_files(tmp_path: Path) -> None:
    etc = conf_dir(tmp_path, age=60)
    result = run(tmp_path, started_ago=None, paths=[etc])
    assert result["started_after"] is False
    assert result["started_at"] == 0
