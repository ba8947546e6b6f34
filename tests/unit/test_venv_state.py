"""The celery_app role's venv check (roles/celery_app/files/venv_state.py), run as the role runs
it: a script given to a Python interpreter (here the one running the tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).parents[2] / "roles/celery_app/files/venv_state.py"
ID = "0123456789abcdef-" + "a" * 40


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def check(stamp: Path) -> dict[str, Any]:
    proc = run("check", str(stamp))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_record_then_check_is_intact(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp.json"
    assert run("record", str(stamp), ID).returncode == 0
    assert check(stamp) == {"id": ID, "intact": True, "wheel": "a" * 40}
    assert (stamp.stat().st_mode & 0o777) == 0o644
    assert not list(tmp_path.glob("*.partial"))
    assert "pytest" in json.loads(stamp.read_text())["distributions"]


def test_a_distribution_changed_since_the_record_is_noticed(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp.json"
    run("record", str(stamp), ID)
    recorded = json.loads(stamp.read_text())
    recorded["distributions"]["pytest"] = "0.0.1"  # as if pytest had been changed by hand
    stamp.write_text(json.dumps(recorded))
    assert check(stamp) == {"id": ID, "intact": False, "wheel": "a" * 40}
    recorded["distributions"]["pytest"] = json.loads(stamp.read_text())["distributions"]["pytest"]
    recorded["distributions"]["no-such-distribution"] = "1.0"  # as if it had been uninstalled
    stamp.write_text(json.dumps(recorded))
    assert check(stamp)["intact"] is False


def test_no_stamp_or_a_broken_one_is_never_intact(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp.json"
    assert check(stamp) == {"id": "", "intact": False, "wheel": ""}
    for text in ["", "{", "[]", '{"id": "x"}', '{"id": "x", "distributions": {}}']:
        stamp.write_text(text)
        assert check(stamp)["intact"] is False, text


def test_without_a_stamp_the_wheel_checksum_of_earlier_releases_is_read(tmp_path: Path) -> None:
    (tmp_path / ".downloader-app-wheel").write_text("b" * 40 + "\n")
    assert check(tmp_path / "stamp.json") == {"id": "", "intact": False, "wheel": "b" * 40}


def test_bad_usage_exits_2() -> None:
    assert run("frobnicate").returncode == 2
    assert run("check").returncode == 2
