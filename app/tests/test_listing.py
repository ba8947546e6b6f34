"""The cluster-wide listing: remote-control command, broadcast, merge, the ``list`` task."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from downloaderApp import app, download, list
from downloaderApp import listing as listing_module
from downloaderApp.config import get_settings
from downloaderApp.listing import (
    CONTROL_COMMAND,
    DirectoryScanner,
    collect_listing,
    collect_page,
    downloader_list,
    local_listing,
    merge_replies,
)
from support import FIXED_BODY, LoopbackServer, downloader
from testenv import LIST_TIMEOUT


@pytest.fixture
def downloaded(worker: str, http_server: LoopbackServer, unique: str) -> str:
    name = f"listed-{unique}.bin"
    download.delay(http_server.url("/fixed"), name).get(timeout=30)
    return name


def test_list_task_returns_file_with_host(downloaded: str) -> None:
    records = list.delay().get(timeout=5)
    assert {"name": downloaded, "host": socket.gethostname(), "bytes": len(FIXED_BODY)} in records
    assert records == sorted(records, key=lambda r: (r["name"], r["host"]))
    assert all(set(r) == {"name", "host", "bytes"} for r in records)


def test_list_answers_within_one_second(downloaded: str) -> None:
    """The tutorial's ``list.delay().get(timeout=1)`` keeps working (broadcast + margin)."""
    timings = []
    for _ in range(3):
        started = time.monotonic()
        records = list.delay().get(timeout=1)
        timings.append(time.monotonic() - started)
        assert any(r["name"] == downloaded for r in records)
    assert max(timings) < 1.0, timings
    assert min(timings) >= LIST_TIMEOUT * 0.9  # it did wait for other workers' replies


def test_list_skips_temporary_files(downloaded: str, download_dir: Path, unique: str) -> None:
    temp = download_dir / f".part-{unique}"
    temp.write_bytes(b"in progress")
    try:
        names = {r["name"] for r in list.delay().get(timeout=5)}
        assert downloaded in names  # the listing lists: its silence about temp means something
        assert temp.name not in names
    finally:
        temp.unlink()


def test_worker_answers_control_command(worker: str, downloaded: str, download_dir: Path) -> None:
    replies = app.control.broadcast(CONTROL_COMMAND, reply=True, timeout=1, destination=[worker])
    assert len(replies) == 1
    reply = replies[0][worker]
    assert reply["host"] == socket.gethostname()
    assert reply["dir"] == str(download_dir)
    assert downloaded in reply["files"]
    assert reply["files"] == sorted(reply["files"])
    assert reply["bytes"][downloaded] == len(FIXED_BODY)


def test_collect_listing_names_answering_nodes(worker: str, downloaded: str) -> None:
    records, nodes = collect_listing(app, get_settings(), include_local=False)
    assert worker in nodes
    assert any(r["name"] == downloaded for r in records)


def test_merge_deduplicates_nodes_of_one_host() -> None:
    same = {"host": "h1", "files": ["a", "b"], "bytes": {"a": 1, "b": 2}}
    other = {"host": "h2", "files": ["a"], "bytes": {"a": 3}}
    merged = merge_replies([same, dict(same), other, {"error": "unknown command"}, "junk"])  # type: ignore[list-item]
    assert merged == [
        {"name": "a", "host": "h1", "bytes": 1},
        {"name": "a", "host": "h2", "bytes": 3},
        {"name": "b", "host": "h1", "bytes": 2},
    ]


def test_failed_broadcast_still_lists_local_files(tmp_path: Path) -> None:
    (tmp_path / "kept.txt").write_bytes(b"12345")

    def broken_broadcast(*args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError("broker down")

    broken_app = SimpleNamespace(control=SimpleNamespace(broadcast=broken_broadcast))
    settings = get_settings().__class__(download_dir=tmp_path)
    records, nodes = collect_listing(broken_app, settings, include_local=True)
    assert records == [{"name": "kept.txt", "host": socket.gethostname(), "bytes": 5}]
    assert nodes == []
    with pytest.raises(ConnectionRefusedError):
        collect_listing(broken_app, settings, include_local=False)


def test_local_listing_of_missing_directory(tmp_path: Path) -> None:
    listing = local_listing(tmp_path / "missing")
    assert listing["files"] == [] and listing["bytes"] == {}


def test_local_listing_only_regular_files(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "subdir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / ".part-abc").write_bytes(b"y")
    assert local_listing(tmp_path)["files"] == ["file"]


def test_local_listing_keeps_the_first_names_and_counts_all(tmp_path: Path) -> None:
    for i in (5, 3, 9, 1, 7):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
    listing = local_listing(tmp_path, 2)
    assert (listing["files"], listing["bytes"], listing["total"]) == (
        ["f1", "f3"],
        {"f1": 1, "f3": 3},
        5,
    )
    later = local_listing(tmp_path, 2, after="f3")
    assert (later["files"], later["total"], later["before"]) == (["f5", "f7"], 5, 2)


def test_a_name_on_two_hosts_is_not_split_between_pages(tmp_path: Path) -> None:
    def reply(host: str, names: Any) -> dict[str, Any]:
        return {"host": host, "files": names, "bytes": dict.fromkeys(names, 1), "total": len(names)}

    class Control:
        def broadcast(self, *args: Any, **kwargs: Any) -> Any:
            return [{"n1@a": reply("a", ["x", "y"])}, {"n1@b": reply("b", ["y", "z"])}]

    settings = dataclasses.replace(get_settings(), list_limit=2)
    page, nodes, total, before = collect_page(
        SimpleNamespace(control=Control()), settings, include_local=False
    )
    assert [(r["name"], r["host"]) for r in page] == [("x", "a"), ("y", "a"), ("y", "b")]
    assert (nodes, total, before) == (["n1@a", "n1@b"], 4, 0)


MANY = 100_000


@pytest.fixture
def many_files(worker: str, download_dir: Path) -> Iterator[int]:
    """MANY empty files in the worker's download directory (named after every other test's);
    yields how many files the directory holds in all."""
    names = [download_dir / f"zz-many-{i:06d}.bin" for i in range(MANY)]
    for path in names:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o640))
    try:
        yield local_listing(download_dir, 0)["total"]
    finally:
        for path in names:
            path.unlink(missing_ok=True)


def test_a_listing_of_100000_files_stays_bounded(many_files: int) -> None:
    """The tutorial's list.delay().get(timeout=1) answers with the first list_limit (1000)
    files; a worker's reply holds only the names asked for, with the counts; the command line
    pages from any name on, and says where the page is."""
    records = list.delay().get(timeout=1)
    assert len(records) == 1000
    assert records == sorted(records, key=lambda r: (r["name"], r["host"]))

    replies = app.control.broadcast(CONTROL_COMMAND, arguments={"first": 20}, reply=True, timeout=1)
    ((reply,),) = [r.values() for r in replies]
    assert (len(reply["files"]), reply["total"]) == (20, many_files)

    last = downloader("list", "--after", f"zz-many-{MANY - 4:06d}.bin")
    assert last.returncode == 0, last.stderr
    assert [line.split()[-1] for line in last.stdout.splitlines()] == [
        f"zz-many-{i:06d}.bin" for i in range(MANY - 3, MANY)
    ]
    assert f"files {many_files - 2}-{many_files} of {many_files}\n" in last.stderr
    first = downloader("list", "--json", "--limit", "5000")  # capped at list_limit
    page = json.loads(first.stdout)
    assert len(page) == 1000
    assert (
        f"files 1-1000 of {many_files}; next: downloader list --after {page[-1]['name']}"
        in first.stderr
    )


class SlowScans:
    """A stand-in for scan_names that takes SECONDS and records the thread of each scan."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: list[str] = []
        self.real = listing_module.scan_names

    def __call__(self, directory: Path) -> list[str]:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.seconds)
        return self.real(directory)


def test_a_slow_scan_does_not_hold_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan runs in a thread of its own: a caller waits `wait` seconds at most, gets
    nothing before the first scan has ended, then the newest complete scan with its end time
    (not fresh) while the next one runs, and a fresh scan when one ends in time."""
    (tmp_path / "a").write_bytes(b"x")
    slow = SlowScans(0.6)
    monkeypatch.setattr(listing_module, "scan_names", slow)
    scanner = DirectoryScanner(tmp_path)
    started = time.monotonic()
    assert scanner.names(wait=0.1) == (None, 0.0, False)
    assert time.monotonic() - started < 0.4
    names, ended, fresh = scanner.names(wait=2)
    assert (names, fresh) == (["a"], True)
    assert slow.threads and threading.current_thread().name not in slow.threads
    (tmp_path / "b").write_bytes(b"y")
    started = time.monotonic()
    stale = scanner.names(wait=0.1)
    assert time.monotonic() - started < 0.4
    assert stale == (["a"], ended, False)
    names, later, fresh = scanner.names(wait=2)
    assert (sorted(names or []), fresh) == (["a", "b"], True) and later > ended
    # Each call was served by a scan that started after it: the fourth call came during the
    # third scan, so a fourth one ran.
    assert len(slow.threads) == 4


def test_the_control_command_answers_within_half_list_timeout_during_a_slow_scan(
    download_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """downloader_list, which a worker runs on its consumer thread, returns within
    list_timeout / 2 while the scan of its directory takes 2 s, and says the listing is not
    there yet; once the scan has ended, the next call answers from it."""
    monkeypatch.setattr(listing_module, "scan_names", SlowScans(2.0))
    monkeypatch.setattr(listing_module, "_scanners", {})
    started = time.monotonic()
    reply = downloader_list(state=None)
    took = time.monotonic() - started
    assert took < LIST_TIMEOUT / 2 + 0.1, took
    assert (reply["files"], reply["total"], reply["scanned_at"]) == ([], None, None)
    time.sleep(2.2)
    later = downloader_list(state=None)
    assert isinstance(later["total"], int) and later["scanned_at"] > time.time() - 5
