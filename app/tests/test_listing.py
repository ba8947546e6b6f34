"""The cluster-wide listing: remote-control command, broadcast, merge, the ``list`` task."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from downloaderApp import app, download, list
from downloaderApp.config import get_settings
from downloaderApp.listing import CONTROL_COMMAND, collect_listing, local_listing, merge_replies
from support import FIXED_BODY, LoopbackServer
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
