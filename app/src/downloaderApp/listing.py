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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from downloaderApp.config import Settings, get_settings

__all__ = ["CONTROL_COMMAND", "collect_listing", "collect_page", "local_listing", "merge_replies"]

log = logging.getLogger(__name__)

CONTROL_COMMAND = "downloader_list"


def local_listing(
    directory: Path, first: int | None = None, after: str | None = None
) -> dict[str, Any]:
    """This host's files: ``{"host", "dir", "files": sorted names, "bytes": {name: size},
    "total": count, "before": count}``, with in ``files`` only the ``first`` names by sort order
    (all without it) that come after the name ``after``, so that a reply stays small whatever
    the directory holds; ``total`` counts all files, ``before`` those up to ``after``.

    Only regular files count; names starting with a dot (the ``.part-*`` temporary files of
    downloads in progress, which no accepted file name can clash with) are skipped. A missing
    directory is an empty listing. Only the names kept are stat()ed for their size.
    """
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


@inspect_command(
    name=CONTROL_COMMAND, args=[("first", int), ("after", str)], signature="[first [after]]"
)
def downloader_list(
    state: Any, first: int | None = None, after: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    """List the files in this worker's download_dir: the ``first`` names (default and at most
    ``list_limit``) after the name ``after``, and the count of all."""
    settings = get_settings()
    bound = settings.list_limit if first is None else max(0, min(int(first), settings.list_limit))
    return local_listing(settings.download_dir, bound, None if after is None else str(after))


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
