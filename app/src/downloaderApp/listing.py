"""Listing downloaded files, per worker and cluster-wide.

Each worker answers the remote-control command ``downloader_list`` with the files of *its own*
``download_dir``; :func:`collect_listing` broadcasts that command and merges the replies. See the
README ("The list() design") for why this is a broadcast and not a shared mount.
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from downloaderApp.config import Settings, get_settings

__all__ = [
    "CONTROL_COMMAND",
    "DirectoryScanner",
    "collect_listing",
    "collect_page",
    "listing_of",
    "local_listing",
    "merge_replies",
    "scan_names",
    "scanner_of",
]

log = logging.getLogger(__name__)

CONTROL_COMMAND = "downloader_list"


def scan_names(directory: Path) -> list[str]:
    """The names of the regular files in DIRECTORY, unsorted, but for names starting with a dot
    (the ``.part-*`` temporary files of downloads in progress, which no accepted file name can
    clash with). A missing directory has none."""
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        names.append(entry.name)
                except OSError:
                    continue  # removed meanwhile
    except FileNotFoundError:
        pass
    return names


def listing_of(
    directory: Path, names: list[str], first: int | None = None, after: str | None = None
) -> dict[str, Any]:
    """The listing of NAMES (a scan of DIRECTORY): ``{"host", "dir", "files": sorted names,
    "bytes": {name: size}, "total": count, "before": count}``, with in ``files`` only the
    ``first`` names by sort order (all without it) that come after the name ``after``, so that a
    reply stays small whatever the directory holds; ``total`` counts all files, ``before`` those
    up to ``after``. Only the names kept are stat()ed for their size."""
    later = names if after is None else [name for name in names if name > after]
    kept = sorted(later) if first is None else heapq.nsmallest(first, later)
    sizes: dict[str, int] = {}
    for name in kept:
        try:
            sizes[name] = os.stat(directory / name, follow_symlinks=False).st_size
        except OSError:
            continue  # removed meanwhile
    return {
        "host": socket.gethostname(),
        "dir": str(directory),
        "files": [name for name in kept if name in sizes],
        "bytes": sizes,
        "total": len(names),
        "before": len(names) - len(later),
    }


def local_listing(
    directory: Path, first: int | None = None, after: str | None = None
) -> dict[str, Any]:
    """This host's files, scanned now in the caller's thread: :func:`listing_of` a
    :func:`scan_names` of DIRECTORY."""
    return listing_of(directory, scan_names(directory), first, after)


class DirectoryScanner:
    """Scans of one directory, made by a thread of its own, one at a time.

    A worker answers ``downloader_list`` on its consumer thread, the one that also takes tasks
    from the broker and answers every other remote-control command: a directory of millions of
    files would hold it for seconds (about a microsecond a file on a warm cache, far more on a
    cold disk or a network mount). :meth:`names` asks for a scan that starts after the call and
    waits for it ``wait`` seconds at most; past that it returns the newest complete scan (older
    than the call) with the time it ended, or nothing when no scan has ended yet. The scan goes
    on, and its result serves the next call.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._changed = threading.Condition()
        self._asked = 0  # tickets handed out
        self._done = 0  # the newest ticket served by a complete scan
        self._names: list[str] | None = None
        self._ended = 0.0  # time.time() at the end of that scan
        self._thread: threading.Thread | None = None

    def names(self, wait: float) -> tuple[list[str] | None, float, bool]:
        """(names or None, when their scan ended (time.time()), whether it started after this
        call)."""
        with self._changed:
            self._asked += 1
            ticket = self._asked
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="downloader-list-scan", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()
            fresh = self._changed.wait_for(lambda: self._done >= ticket, timeout=wait)
            return self._names, self._ended, bool(fresh)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._asked > self._done)
                serving = self._asked
            try:
                names = scan_names(self.directory)
            except OSError as exc:  # the directory unreadable: an empty listing, logged
                log.warning("cannot list %s: %s", self.directory, exc)
                names = []
            with self._changed:
                self._names, self._ended, self._done = names, time.time(), serving
                self._changed.notify_all()


_scanners: dict[Path, DirectoryScanner] = {}
_scanners_lock = threading.Lock()


def scanner_of(directory: Path) -> DirectoryScanner:
    """The process's one scanner of DIRECTORY."""
    with _scanners_lock:
        if directory not in _scanners:
            _scanners[directory] = DirectoryScanner(directory)
        return _scanners[directory]


@inspect_command(
    name=CONTROL_COMMAND, args=[("first", int), ("after", str)], signature="[first [after]]"
)
def downloader_list(
    state: Any, first: int | None = None, after: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    """List the files in this worker's download_dir: the ``first`` names (default and at most
    ``list_limit``) after the name ``after``, and the count of all.

    The directory is scanned off this (the consumer's) thread, waited for ``list_timeout / 2``
    at most, so that the reply still reaches a caller that waits ``list_timeout``. A scan that
    takes longer is answered from the newest complete scan, with ``"scanned_at"`` (its end,
    seconds since the epoch); with none yet, ``"files"`` is empty and ``"total"`` is None."""
    settings = get_settings()
    bound = settings.list_limit if first is None else max(0, min(int(first), settings.list_limit))
    scanner = scanner_of(settings.download_dir)
    names, ended, fresh = scanner.names(settings.list_timeout / 2)
    if names is None:
        return {
            "host": socket.gethostname(),
            "dir": str(settings.download_dir),
            "files": [],
            "bytes": {},
            "total": None,
            "before": 0,
            "scanned_at": None,
        }
    reply = listing_of(settings.download_dir, names, bound, None if after is None else str(after))
    if not fresh:
        reply["scanned_at"] = ended
    return reply


def merge_replies(replies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Merge listings into ``[{"name", "host", "bytes"}]`` sorted by name then host.

    Entries are keyed by (host, name): several worker nodes on one host share its
    download_dir and answer with the same files. Malformed replies (for example the error
    answer of a worker that does not know the command) are ignored.
    """
    records: dict[tuple[str, str], int] = {}
    for reply in replies:
        if not isinstance(reply, Mapping):
            continue
        host, files, sizes = reply.get("host"), reply.get("files"), reply.get("bytes")
        if not isinstance(host, str) or not isinstance(files, list):
            continue
        if not isinstance(sizes, Mapping):
            sizes = {}
        for name in files:
            if isinstance(name, str):
                size = sizes.get(name)
                records[(host, name)] = size if isinstance(size, int) else -1
    ordered = sorted(records.items(), key=lambda item: (item[0][1], item[0][0]))
    return [{"name": name, "host": host, "bytes": size} for (host, name), size in ordered]


def collect_page(
    app: Celery,
    settings: Settings,
    *,
    include_local: bool,
    timeout: float | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], list[str], int, int]:
    """One page of the cluster's files: (the first ``limit`` merged records whose name comes
    after ``after``, names of the answering nodes, count of all files, count of the files up to
    ``after``). ``limit`` defaults to and is capped at ``list_limit``; each worker sends only its
    first ``limit`` names after ``after``, which hold every record of the page. A name on several
    hosts is never split between two pages (the page may then pass ``limit``)."""
    size = settings.list_limit if limit is None else max(1, min(limit, settings.list_limit))
    wait = settings.list_timeout if timeout is None else timeout
    arguments: dict[str, Any] = (
        {"first": size} if after is None else {"first": size, "after": after}
    )
    listings: list[Mapping[str, Any]] = []
    nodes: list[str] = []
    try:
        replies = (
            app.control.broadcast(CONTROL_COMMAND, arguments=arguments, reply=True, timeout=wait)
            or []
        )
    except Exception as exc:
        if not include_local:
            raise
        log.warning("listing broadcast failed, only local files are listed: %s", exc)
        replies = []
    for reply in replies:
        if not isinstance(reply, Mapping):
            continue
        for node, value in reply.items():
            nodes.append(str(node))
            if isinstance(value, Mapping):
                listings.append(value)
    if include_local:
        listings.append(local_listing(settings.download_dir, size, after))
    # Nodes of one host share its directory: its counts once.
    counts: dict[str, tuple[int, int]] = {}
    for listing in listings:
        host, total, before = listing.get("host"), listing.get("total"), listing.get("before")
        if isinstance(host, str) and isinstance(total, int):
            counts[host] = (total, before if isinstance(before, int) else 0)
    records = merge_replies(listings)
    if after is not None:
        records = [r for r in records if r["name"] > after]
    page = records[:size]
    if page:
        page += [r for r in records[size:] if r["name"] == page[-1]["name"]]
    total = sum(t for t, _ in counts.values())
    return page, sorted(nodes), total, sum(b for _, b in counts.values())


def collect_listing(
    app: Celery,
    settings: Settings,
    *,
    include_local: bool,
    timeout: float | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Broadcast ``downloader_list``; return (the first ``list_limit`` merged records, names of
    the answering nodes).

    Waits ``timeout`` (default ``list_timeout``) seconds for replies. If the broadcast fails
    and ``include_local`` is set, the error is logged and the local listing is returned;
    without ``include_local`` the error propagates.
    """
    records, nodes, _total, _before = collect_page(
        app, settings, include_local=include_local, timeout=timeout
    )
    return records, nodes
