"""Listing downloaded files, per worker and cluster-wide.

Each worker answers the remote-control command ``downloader_list`` with the files of *its own*
``download_dir``; :func:`collect_listing` broadcasts that command and merges the replies. See the
README ("The list() design") for why this is a broadcast and not a shared mount.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from celery import Celery
from celery.worker.control import inspect_command

from downloaderApp.config import Settings, get_settings

__all__ = ["CONTROL_COMMAND", "collect_listing", "local_listing", "merge_replies"]

log = logging.getLogger(__name__)

CONTROL_COMMAND = "downloader_list"


def local_listing(directory: Path) -> dict[str, Any]:
    """This host's files: ``{"host", "dir", "files": sorted names, "bytes": {name: size}}``.

    Only regular files count; names starting with a dot (the ``.part-*`` temporary files of
    downloads in progress, which no accepted file name can clash with) are skipped. A missing
    directory is an empty listing.
    """
    sizes: dict[str, int] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue  # removed meanwhile
    except FileNotFoundError:
        pass
    return {
        "host": socket.gethostname(),
        "dir": str(directory),
        "files": sorted(sizes),
        "bytes": sizes,
    }


@inspect_command(name=CONTROL_COMMAND)
def downloader_list(state: Any, **kwargs: Any) -> dict[str, Any]:
    """List the files in this worker's download_dir."""
    return local_listing(get_settings().download_dir)


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


def collect_listing(
    app: Celery,
    settings: Settings,
    *,
    include_local: bool,
    timeout: float | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Broadcast ``downloader_list``; return (merged records, names of the answering nodes).

    Waits ``timeout`` (default ``list_timeout``) seconds for replies. If the broadcast fails
    and ``include_local`` is set, the error is logged and the local listing is returned;
    without ``include_local`` the error propagates.
    """
    wait = settings.list_timeout if timeout is None else timeout
    listings: list[Mapping[str, Any]] = []
    nodes: list[str] = []
    try:
        replies = app.control.broadcast(CONTROL_COMMAND, reply=True, timeout=wait) or []
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
        listings.append(local_listing(settings.download_dir))
    return merge_replies(listings), sorted(nodes)
