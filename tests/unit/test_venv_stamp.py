"""The venv_stamp module (plugins/modules/venv_stamp.py), run as Ansible runs it, against a real
venv (without pip) whose distributions are dist-info directories made by the test."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from module_run import run_module

ID = "0123456789abcdef-" + "a" * 40


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    for name, version in (("celery", "5.5.3"), ("downloader_app", "1.0.0")):
        install(path, name, version)
    return path


def site_packages(venv: Path) -> Path:
    version = sysconfig.get_python_version()
    return venv / "lib" / f"python{version}" / "site-packages"


def install(venv: Path, name: str, version: str) -> None:
    info = site_packages(venv) / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def run(venv: Path, check: bool = False, **params: Any) -> dict[str, Any]:
    params = {"venv": str(venv), "stamp": str(venv / "stamp.json"), **params}
    return run_module("venv_stamp", venv.parent, params, check=check)


def test_record_then_check_is_intact_and_a_second_record_changes_nothing(venv: Path) -> None:
    recorded = run(venv, state="record", id=ID)
    assert recorded["changed"] is True
    stamp = venv / "stamp.json"
    assert json.loads(stamp.read_text()) == {
        "id": ID,
        "distributions": {"celery": "5.5.3", "downloader-app": "1.0.0"},
    }
    assert (stamp.stat().st_mode & 0o777) == 0o644
    assert not list(venv.glob("*.partial"))
    checked = run(venv)
    assert {k: checked[k] for k in ("changed", "id", "intact", "wheel")} == {
        "changed": False,
        "id": ID,
        "intact": True,
        "wheel": "a" * 40,
    }
    assert run(venv, state="record", id=ID)["changed"] is False


def test_a_distribution_changed_or_removed_by_hand_is_noticed(venv: Path) -> None:
    run(venv, state="record", id=ID)
    info = site_packages(venv) / "celery-5.5.3.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: celery\nVersion: 5.4.0\n")
    assert run(venv)["intact"] is False
    (info / "METADATA").unlink()
    info.rmdir()
    assert run(venv)["intact"] is False
    install(venv, "celery", "5.5.3")
    assert run(venv)["intact"] is True


def test_no_stamp_a_broken_one_or_no_venv_is_never_intact(venv: Path) -> None:
    assert {k: v for k, v in run(venv).items() if k in ("id", "intact", "wheel")} == {
        "id": "",
        "intact": False,
        "wheel": "",
    }
    stamp = venv / "stamp.json"
    for text in ["", "{", "[]", '{"id": "x"}', '{"id": "x", "distributions": {}}']:
        stamp.write_text(text)
        assert run(venv)["intact"] is False, text
    run(venv, state="record", id=ID)
    # The stamp of this venv, read for a directory that is no venv.
    assert run(venv.parent / "nowhere", stamp=str(stamp))["intact"] is False


def test_without_a_stamp_the_wheel_checksum_of_earlier_releases_is_read(venv: Path) -> None:
    (venv / ".downloader-app-wheel").write_text("b" * 40 + "\n")
    assert run(venv)["wheel"] == "b" * 40


def test_check_mode_records_nothing_and_says_what_would_change(venv: Path) -> None:
    dry = run(venv, check=True, state="record", id=ID)
    assert dry["changed"] is True
    assert '"id": "' + ID in dry["diff"]["after"]
    assert not (venv / "stamp.json").exists()


def test_record_needs_an_id_and_a_venv(venv: Path) -> None:
    assert "id" in run(venv, state="record")["msg"]
    failed = run(venv.parent / "nowhere", state="record", id=ID, stamp=str(venv / "stamp.json"))
    assert failed["failed"] is True
    assert "cannot list the venv's distributions" in failed["msg"]
