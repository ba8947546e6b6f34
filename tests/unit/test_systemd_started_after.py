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


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def run(tmp_path: Path, started: float | None, paths: list[Path]) -> dict[str, Any]:
    """The module's result for a main process started at the monotonic time STARTED (None: not
    running)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "systemctl").write_text(STAND_IN)
    (bindir / "systemctl").chmod(0o755)
    mono = 0 if started is None else int(started * 1e6)
    env = dict(
        os.environ,
        PATH=f"{bindir}:{os.environ['PATH']}",
        MAIN_PID="0" if started is None else "4242",
        STARTED_MONO=str(mono),
    )
    args = tmp_path / "args.json"
    params = {"unit": "rabbitmq-server", "paths": [str(p) for p in paths], "_ansible_check_mode": True}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    argv = [sys.executable, str(MODULE), str(args)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def conf_dir(tmp_path: Path) -> Path:
    """/etc/rabbitmq as a test tree, written now."""
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    for path in (etc / "rabbitmq.conf", etc / "tls/server.key", etc / "inter_node_tls.config"):
        path.write_text("x")
    time.sleep(0.05)
    return etc


def test_a_node_started_after_its_files_changed_runs_them(tmp_path: Path) -> None:
    etc = conf_dir(tmp_path)
    result = run(tmp_path, started=now(), paths=[etc, tmp_path / "no-cookie-yet"])
    assert result["changed"] is False
    assert result["started_after"] is True
    assert result["changed_at"] < result["started_at"]


def test_a_file_written_removed_or_given_another_mode_since_the_start_is_noticed(tmp_path: Path) -> None:
    for change in ("write", "remove", "chmod"):
        etc = conf_dir(tmp_path / change)
        started = now()
        time.sleep(0.05)
        if change == "write":
            (etc / "tls/server.key").write_text("new key")
        elif change == "remove":
            (etc / "inter_node_tls.config").unlink()  # changes only the directory's times
        else:
            (etc / "tls/server.key").chmod(0o640)  # changes only the file's inode time
        assert run(tmp_path, started=started, paths=[etc])["started_after"] is False, change


def test_a_node_that_does_not_run_never_runs_the_files(tmp_path: Path) -> None:
    etc = conf_dir(tmp_path)
    result = run(tmp_path, started=None, paths=[etc])
    assert result["started_after"] is False
    assert result["started_at"] == 0
