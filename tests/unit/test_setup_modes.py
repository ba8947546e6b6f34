"""scripts/setup --controller installs what a controller needs and nothing for the test hosts:
no container engine, no images, no OS packages when its venv is current. Run in a copy of the
script with stand-ins on PATH that record every call; nothing is installed or started."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
# What the full setup calls for the test hosts; each stand-in only writes its call to the log.
RECORDED = [
    "apt-get", "docker", "dockerd", "debootstrap", "chromium", "chromedriver", "curl", "ssh-keygen", "ssh",
]  # fmt: skip


def setup_copy(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A copy of scripts/setup beside a current .venv (the running Python, the stamp of
    requirements-dev.txt), and an environment whose PATH finds the stand-ins first."""
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts/setup", root / "scripts/setup")
    shutil.copy2(ROOT / "requirements-dev.txt", root / "requirements-dev.txt")
    venv = root / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").symlink_to(sys.executable)
    digest = hashlib.sha256((root / "requirements-dev.txt").read_bytes()).hexdigest()
    (venv / ".requirements-dev.sha256").write_text(digest + "\n")
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in RECORDED:
        stand_in = bin_dir / name
        stand_in.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
    return root, log, env


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_controller_mode_calls_no_container_engine_and_installs_nothing(tmp_path: Path) -> None:
    root, log, env = setup_copy(tmp_path)
    proc = subprocess.run(
        [str(root / "scripts/setup"), "--controller"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert calls(log) == [], calls(log)
    assert "setup done" in proc.stdout


def test_the_stand_ins_see_what_the_other_modes_call(tmp_path: Path) -> None:
    """The same copy without --controller: the container engine is asked (the stand-ins catch
    the calls that --controller must not make)."""
    root, log, env = setup_copy(tmp_path)
    subprocess.run([str(root / "scripts/setup"), "--no-images"], capture_output=True, env=env, timeout=60)
    assert any(call.startswith("docker info") for call in calls(log)), calls(log)


def test_an_unknown_option_is_refused_with_the_usage(tmp_path: Path) -> None:
    root, log, env = setup_copy(tmp_path)
    proc = subprocess.run(
        [str(root / "scripts/setup"), "--images"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2 and "usage: scripts/setup" in proc.stderr, proc.stderr
    assert calls(log) == []
