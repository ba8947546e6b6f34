"""The systemd_started_after module (plugins/modules/systemd_started_after.py), run as Ansible
runs it, with a stand-in systemctl that reports a main process started at a chosen moment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from module_run import run_module, stand_in

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
    stand_in(tmp_path / "bin", "systemctl", STAND_IN)
    mono = 0 if started is None else int(started * 1e6)
    env = {"MAIN_PID": "0" if started is None else "4242", "STARTED_MONO": str(mono)}
    params = {"unit": "rabbitmq-server", "paths": [str(p) for p in paths]}
    return run_module("systemd_started_after", tmp_path, params, check=True, env=env)


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
