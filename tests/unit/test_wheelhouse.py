"""The wheelhouse module (plugins/modules/wheelhouse.py), run as Ansible runs it, with a stand-in
Python whose `-m pip download` and `-m pip wheel` write wheels from their arguments and log each
call: what is built, what a second run leaves alone, and what reaches the disk."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from module_run import run_module

EPOCH = 315532800

# python -m pip (download ... --dest D --python-version V --platform P... --requirement R
#                | wheel ... --wheel-dir D SOURCE)
STAND_IN = """#!/usr/bin/env python3
import hashlib, json, os, sys, time
args = sys.argv[3:]
with open(os.environ["PIP_CALLS"], "a") as log:
    log.write(json.dumps(args) + "\\n")
time.sleep(float(os.environ.get("PIP_SLEEP", "0")))
if os.environ.get("PIP_FAILS"):
    sys.stderr.write("ERROR: No matching distribution found for celery==9.9\\n")
    sys.exit(1)
def opt(name):
    return args[args.index(name) + 1]
if args[0] == "download":
    for line in open(opt("--requirement")):
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            wheel = f"{name}-{version}-cp{opt('--python-version').replace('.', '')}-{opt('--platform')}.whl"
            open(os.path.join(opt("--dest"), wheel), "w").write(line)
elif args[0] == "wheel":
    source = args[-1]
    digest = hashlib.sha256(os.environ["SOURCE_DATE_EPOCH"].encode())
    for root, dirs, files in os.walk(os.path.join(source, "src")):
        for name in sorted(f for f in files if f.endswith(".py")):
            digest.update(open(os.path.join(root, name), "rb").read())
    open(os.path.join(opt("--wheel-dir"), "app-1.0-py3-none-any.whl"), "w").write(digest.hexdigest())
"""

TARGETS = [["3.11", "x86_64"], ["3.12", "aarch64"], ["3.11", "x86_64"]]


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    source = tmp_path / "app"
    (source / "src/app").mkdir(parents=True)
    (source / "pyproject.toml").write_text("[project]\nname = 'app'\n")
    (source / "src/app/__init__.py").write_text("VERSION = 1\n")
    (source / "requirements.lock").write_text("celery==5.5.3\nkombu==5.5.4  # pinned\n")
    python = tmp_path / "python"
    python.write_text(STAND_IN)
    python.chmod(0o755)
    return tmp_path


def run(
    lab: Path, check: bool = False, fails: bool = False, workdir: Path | None = None, **params: Any
) -> dict[str, Any]:
    params = {
        "dir": str(lab / "wheelhouse"),
        "source": str(lab / "app"),
        "lock": str(lab / "app/requirements.lock"),
        "targets": TARGETS,
        "python": str(lab / "python"),
        **params,
    }
    env = {"PIP_CALLS": str(lab / "calls"), "PIP_SLEEP": os.environ.get("PIP_SLEEP", "0")}
    env.update({"PIP_FAILS": "1"} if fails else {})
    return run_module("wheelhouse", workdir or lab, params, check=check, env=env)


def calls(lab: Path) -> list[list[str]]:
    path = lab / "calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def lock_hash(lab: Path) -> str:
    return hashlib.sha256((lab / "app/requirements.lock").read_text().rstrip().encode()).hexdigest()


def test_a_first_run_builds_each_target_once_then_a_second_run_calls_no_pip(lab: Path) -> None:
    first = run(lab)
    digest = lock_hash(lab)
    assert first["changed"] is True
    assert first["lock_hash"] == digest
    assert first["archives"] == {
        "cp311-x86_64": f"cp311-x86_64-{digest[:16]}.tar",
        "cp312-aarch64": f"cp312-aarch64-{digest[:16]}.tar",
    }
    downloads = [c for c in calls(lab) if c[0] == "download"]
    assert sorted(c[c.index("--python-version") + 1] for c in downloads) == ["3.11", "3.12"]
    assert len([c for c in calls(lab) if c[0] == "wheel"]) == 1

    home = lab / "wheelhouse"
    wheel = home / "app" / first["wheel"]
    assert first["wheel"] == "app-1.0-py3-none-any.whl"
    assert first["checksum"] == hashlib.sha1(wheel.read_bytes()).hexdigest()
    with tarfile.open(home / first["archives"]["cp312-aarch64"]) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "celery-5.5.3-cp312-manylinux2014_aarch64.whl",
        "kombu-5.5.4-cp312-manylinux2014_aarch64.whl",
    ]
    assert {(m.uid, m.gid, m.mtime, m.mode) for m in members} == {(0, 0, EPOCH, 0o644)}
    assert not list(home.rglob("*.partial"))

    before = len(calls(lab))
    second = run(lab)
    assert second["changed"] is False
    assert second["built"] == []
    assert {k: second[k] for k in ("archives", "wheel", "checksum")} == {
        k: first[k] for k in ("archives", "wheel", "checksum")
    }
    assert len(calls(lab)) == before


def test_two_runs_at_once_wait_for_each_other_and_build_everything_once(
    lab: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each pip call takes a second: without the lock both runs download every target and build
    # the wheel into the same files at the same time.
    monkeypatch.setenv("PIP_SLEEP", "1")
    (lab / "a").mkdir()
    (lab / "b").mkdir()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda w: run(lab, workdir=lab / w), ["a", "b"]))
    assert sorted(len(r["built"]) for r in results) == [0, 5]
    assert [r["wheel"] for r in results] == ["app-1.0-py3-none-any.whl"] * 2
    assert results[0]["checksum"] == results[1]["checksum"]
    assert sorted(c[0] for c in calls(lab)) == ["download", "download", "wheel"]
    assert not list((lab / "wheelhouse").rglob("*.partial"))


def test_the_same_wheels_pack_into_the_same_bytes(lab: Path) -> None:
    first = run(lab)
    archive = lab / "wheelhouse" / first["archives"]["cp311-x86_64"]
    packed = archive.read_bytes()
    archive.unlink()
    for wheel in (lab / "wheelhouse/cp311-x86_64").glob("*.whl"):
        os.utime(wheel, (EPOCH + 99, EPOCH + 99))
    again = run(lab)
    assert again["built"] == [f"packed {archive.name}"]
    assert archive.read_bytes() == packed


def test_a_changed_source_rebuilds_only_the_wheel_and_caches_do_not(lab: Path) -> None:
    first = run(lab)
    before = len(calls(lab))
    for noise in ("build/lib/app/__init__.py", ".mypy_cache/x.json", "src/app.egg-info/PKG-INFO"):
        (lab / "app" / noise).parent.mkdir(parents=True, exist_ok=True)
        (lab / "app" / noise).write_text("noise")
    (lab / "app/src/app/__pycache__").mkdir()
    (lab / "app/src/app/__pycache__/x.cpython-311.pyc").write_text("noise")
    assert run(lab)["changed"] is False
    assert len(calls(lab)) == before

    (lab / "app/src/app/__init__.py").write_text("VERSION = 2\n")
    changed = run(lab)
    assert changed["built"] == ["built app-1.0-py3-none-any.whl"]
    assert changed["checksum"] != first["checksum"]
    assert [c[0] for c in calls(lab)[before:]] == ["wheel"]
    rebuilt = (lab / "wheelhouse/app" / changed["wheel"]).read_bytes()
    assert changed["checksum"] == hashlib.sha1(rebuilt).hexdigest()

    # Back to the first source: its note names a wheel whose bytes are no longer on disk.
    (lab / "app/src/app/__init__.py").write_text("VERSION = 1\n")
    back = run(lab)
    assert back["checksum"] == first["checksum"]
    assert [c[0] for c in calls(lab)[before:]] == ["wheel", "wheel"]


def test_a_damaged_note_is_built_again_and_written_anew(lab: Path) -> None:
    first = run(lab)
    (note,) = (lab / "wheelhouse/app").glob("source-*.json")
    note.write_text('{"wheel": "app-1.0-py')  # as an interrupted write of an older release left it
    again = run(lab)
    assert again["built"] == ["built app-1.0-py3-none-any.whl"]
    assert again["checksum"] == first["checksum"]
    assert json.loads(note.read_text()) == {"wheel": first["wheel"], "checksum": first["checksum"]}
    assert run(lab)["changed"] is False


def test_a_new_lock_file_downloads_again_under_new_names(lab: Path) -> None:
    first = run(lab)
    (lab / "app/requirements.lock").write_text("celery==5.5.3\nkombu==5.6.0\n")
    second = run(lab)
    assert set(second["archives"].values()).isdisjoint(first["archives"].values())
    # The lock file lies in the source tree: the wheel is built again too, to the same bytes.
    assert sorted(second["built"]) == sorted(
        ["downloaded cp311-x86_64", "downloaded cp312-aarch64", "built app-1.0-py3-none-any.whl"]
        + [f"packed {a}" for a in second["archives"].values()]
    )
    assert second["checksum"] == first["checksum"]
    with tarfile.open(lab / "wheelhouse" / second["archives"]["cp311-x86_64"]) as tar:
        assert "kombu-5.6.0-cp311-manylinux2014_x86_64.whl" in tar.getnames()


def test_check_mode_says_what_it_would_build_and_writes_nothing(lab: Path) -> None:
    dry = run(lab, check=True)
    assert dry["changed"] is True
    assert dry["wheel"] == ""
    assert "downloaded cp311-x86_64" in dry["built"]
    assert not (lab / "wheelhouse").exists()
    assert calls(lab) == []


def test_a_failing_pip_fails_with_its_words_and_leaves_no_marker_or_archive(lab: Path) -> None:
    failed = run(lab, fails=True)
    assert failed["failed"] is True
    assert "No matching distribution found for celery==9.9" in failed["msg"]
    home = lab / "wheelhouse"
    assert not list(home.rglob(".complete-*")) and not list(home.glob("*.tar*"))


def test_a_target_that_is_no_pair_is_refused(lab: Path) -> None:
    refused = run(lab, targets=[["3.11", "x86_64"], ["3.11"]])
    assert refused["failed"] is True
    assert "each must be a pair [python version, CPU]" in refused["msg"]
    assert calls(lab) == []


def test_a_missing_source_or_lock_file_is_named(lab: Path) -> None:
    (lab / "app/pyproject.toml").unlink()
    missing = run(lab)
    assert missing["failed"] is True
    assert f"{lab}/app/pyproject.toml not found" in missing["msg"]
    gone = run(lab, source=str(lab / "app"), lock=str(lab / "nowhere.lock"))
    assert "not found" in gone["msg"]
    assert calls(lab) == []
