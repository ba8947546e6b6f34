"""A configuration file this user may not read: a clear error, never the built-in defaults.

Each check runs in a child that permissions bite (``support.run_unprivileged``: as nobody
when the tests run as root). The files live in a directory of their own that everybody may
search (pytest's ``tmp_path`` and the tests' work directory are private to their owner).
"""

from __future__ import annotations

import grp
import json
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.bin.celery import main as celery_main

import downloaderApp
from downloaderApp import config
from downloaderApp.errors import ConfigError, ConfigUnreadable
from support import ChildResult, forget_downloader_app, run_unprivileged

BODY = "[downloader]\nbroker_url = pyamqp://app:secret@rabbit.invalid//\nmax_retries = 7\n"
EXIT_CONFIG_UNREADABLE = 6
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A fresh directory, mode 0755, whose ancestors everybody may search (/tmp)."""
    path = Path(tempfile.mkdtemp(prefix="downloader-perm-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for sub in [path, *path.rglob("*")]:
        sub.chmod(0o755 if sub.is_dir() else 0o644)
    shutil.rmtree(path)


def group_of(path: Path) -> str:
    gid = path.stat().st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def unreadable_file(open_dir: Path) -> Path:
    path = open_dir / "downloader.conf"
    path.write_text(BODY, encoding="utf-8")
    path.chmod(0o000)
    return path


def file_in_private_dir(open_dir: Path) -> Path:
    private = open_dir / "etc-downloader"
    private.mkdir()
    path = private / "downloader.conf"
    path.write_text(BODY, encoding="utf-8")
    path.chmod(0o644)
    private.chmod(0o700)
    return path


def load_as_unprivileged(path: Path, explicit: bool) -> dict[str, str]:
    """``load_settings`` in the child, for ``path`` named by DOWNLOADER_CONFIG (``explicit``)
    or as the default file; what it returned or raised."""

    def child() -> None:
        env = {config.ENV_CONFIG: str(path)} if explicit else {}
        config.DEFAULT_CONFIG_PATH = "/nonexistent/downloader.conf" if explicit else str(path)
        try:
            settings = config.load_settings(env)
        except Exception as exc:
            report = {
                "type": type(exc).__name__,
                "message": str(exc),
                "path": str(getattr(exc, "path", "")),
                "group": str(getattr(exc, "group", "")),
            }
        else:
            report = {"type": "Settings", "broker_url": settings.broker_url}
        print(json.dumps(report))

    result = run_unprivileged(child)
    assert result.code == 0, result.stderr
    report: dict[str, str] = json.loads(result.stdout)
    return report


def assert_clear_message(message: str, path: Path, group: str) -> None:
    assert str(path) in message
    assert "permission denied" in message
    assert "run as root" in message
    assert f"member of group {group}" in message


@pytest.mark.parametrize("explicit", [False, True], ids=["default-path", "DOWNLOADER_CONFIG"])
def test_file_mode_0000_is_an_error_not_the_defaults(open_dir: Path, explicit: bool) -> None:
    path = unreadable_file(open_dir)
    report = load_as_unprivileged(path, explicit)
    assert report["type"] == "ConfigUnreadable", report
    assert_clear_message(report["message"], path, group_of(path))
    assert "the file is " in report["message"] and "mode 0000" in report["message"]
    assert (report["path"], report["group"]) == (str(path), group_of(path))


@pytest.mark.parametrize("explicit", [False, True], ids=["default-path", "DOWNLOADER_CONFIG"])
def test_file_in_a_directory_0700_is_an_error_not_the_defaults(
    open_dir: Path, explicit: bool
) -> None:
    """The case found on a cluster: /etc/downloader is 0750 root:downloader. Before, the file
    seemed missing: the defaults applied (a broker on localhost), or, named by
    DOWNLOADER_CONFIG, it "did not exist"."""
    path = file_in_private_dir(open_dir)
    report = load_as_unprivileged(path, explicit)
    assert report["type"] == "ConfigUnreadable", report
    assert_clear_message(report["message"], path, group_of(path.parent))
    assert f"directory {path.parent} is " in report["message"]
    assert "mode 0700" in report["message"]
    assert "does not exist" not in report["message"]


@pytest.mark.skipif(not AS_ROOT, reason="needs root to give the directory an unnamed group")
def test_a_group_without_a_name_is_given_by_number(open_dir: Path) -> None:
    gid = max(group.gr_gid for group in grp.getgrall() if group.gr_gid < 60000) + 1
    path = file_in_private_dir(open_dir)
    os.chown(path.parent, 0, gid)
    path.parent.chmod(0o750)
    report = load_as_unprivileged(path, explicit=False)
    assert report["type"] == "ConfigUnreadable", report
    assert_clear_message(report["message"], path, str(gid))


def test_a_missing_default_file_still_means_the_defaults(open_dir: Path) -> None:
    report = load_as_unprivileged(open_dir / "absent.conf", explicit=False)
    assert report == {"type": "Settings", "broker_url": config.Settings().broker_url}


def test_a_readable_file_is_read_by_the_unprivileged_user(open_dir: Path) -> None:
    path = open_dir / "downloader.conf"
    path.write_text(BODY, encoding="utf-8")
    path.chmod(0o644)
    report = load_as_unprivileged(path, explicit=False)
    assert report == {"type": "Settings", "broker_url": "pyamqp://app:secret@rabbit.invalid//"}


def run_fresh(path: Path, func_name: str, argv: list[str]) -> ChildResult:
    """A fresh import of the package in the unprivileged child, as a new process makes it,
    then ``downloader ARGV`` (``cli``) or ``celery -A downloaderApp ARGV`` (``celery``)."""
    downloaderApp.app.conf.task_default_queue  # noqa: B018 - load Celery's config modules first

    def child() -> int:
        os.environ[config.ENV_CONFIG] = str(path)
        forget_downloader_app()
        if func_name == "cli":
            from downloaderApp.cli import main

            return main(argv)
        sys.argv = ["celery", "-A", "downloaderApp", *argv]
        return int(celery_main() or 0)

    return run_unprivileged(child)


@pytest.mark.parametrize("command", ["status", "list"])
def test_cli_exit_code_and_message(open_dir: Path, command: str) -> None:
    path = file_in_private_dir(open_dir)
    result = run_fresh(path, "cli", [command])
    assert result.code == EXIT_CONFIG_UNREADABLE, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("downloader: cannot read configuration file ")
    assert_clear_message(result.stderr, path, group_of(path.parent))
    assert "Traceback" not in result.stderr


def test_cli_exit_code_for_a_file_mode_0000(open_dir: Path) -> None:
    path = unreadable_file(open_dir)
    result = run_fresh(path, "cli", ["status"])
    assert result.code == EXIT_CONFIG_UNREADABLE, result
    assert_clear_message(result.stderr, path, group_of(path))


def test_import_then_every_use_of_the_config_raises(open_dir: Path) -> None:
    """``celery -A downloaderApp ...`` imports the package, then uses ``app.conf``: the clear
    error, each time (not Celery's defaults from the second use on)."""
    path = file_in_private_dir(open_dir)

    def child() -> None:
        os.environ[config.ENV_CONFIG] = str(path)
        forget_downloader_app()
        import downloaderApp as fresh

        for _ in range(2):
            try:
                print(json.dumps({"broker_url": fresh.app.conf.broker_url}))
            except Exception as exc:
                print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))

    downloaderApp.app.conf.task_default_queue  # noqa: B018 - load Celery's config modules first
    result = run_unprivileged(child)
    assert result.code == 0, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 2, reports
    for report in reports:
        assert report.get("type") == "ConfigUnreadable", report
        assert_clear_message(report["message"], path, group_of(path.parent))


def test_celery_status_prints_the_clear_message(open_dir: Path) -> None:
    path = file_in_private_dir(open_dir)
    result = run_fresh(path, "celery", ["status"])
    assert result.code != 0, result
    output = result.stdout + result.stderr
    assert "Connection refused" not in output
    assert f"cannot read configuration file {path}: permission denied" in output
    assert_clear_message(output, path, group_of(path.parent))


def test_the_error_is_a_config_error_and_pickles() -> None:
    error = ConfigUnreadable("cannot read configuration file /x: permission denied", "/x", "g")
    assert isinstance(error, ConfigError)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.path, copy.group) == (str(error), "/x", "g")
