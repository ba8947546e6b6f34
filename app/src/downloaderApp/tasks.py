"""The tasks ``downloaderApp.download`` and ``downloaderApp.list``."""

from __future__ import annotations

import random
from typing import Any

from celery import Task
from celery.signals import worker_ready
from celery.utils.log import get_task_logger

from downloaderApp import listing
from downloaderApp.celery_app import app
from downloaderApp.config import get_settings
from downloaderApp.errors import DownloaderError, TransientDownloadError
from downloaderApp.fetch import download_to_dir, remove_stale_parts

__all__ = ["download", "list_files", "retry_delay"]

logger = get_task_logger(__name__)

MAX_BACKOFF = 300.0


def retry_delay(retries: int, base: float, retry_after: float | None = None) -> int:
    """Seconds before retry number ``retries + 1``: ``base * 2**retries`` plus up to 25 %
    jitter, never less than a server's ``Retry-After``, capped at 5 minutes.

    Whole seconds, at least 1: on quorum queues the countdown goes through RabbitMQ's native
    delayed delivery, which counts in whole seconds (and Celery 5.7 rejects 0 < countdown < 1).
    """
    delay = min(base * 2.0**retries, MAX_BACKOFF)
    delay += random.uniform(0, delay / 4)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return max(1, round(min(delay, MAX_BACKOFF)))


# throws: DownloaderErrors are expected outcomes; the worker logs them without a traceback.
@app.task(bind=True, name="downloaderApp.download", throws=(DownloaderError,))
def download(self: Task, url: str, filename: str, overwrite: bool = False) -> dict[str, Any]:
    """Download ``url`` to ``filename`` in the worker's download_dir (see README for the rules).

    Returns ``{"host", "path", "filename", "bytes", "sha256", "content_type", "url"}``.
    """
    settings = get_settings()
    delivery_info = self.request.delivery_info or {}
    redelivered = bool(delivery_info.get("redelivered"))
    try:
        return download_to_dir(
            url,
            filename,
            settings,
            overwrite=overwrite,
            redelivered=redelivered,
            task_id=self.request.id,
        )
    except TransientDownloadError as exc:
        attempt = int(self.request.retries or 0)
        if attempt >= settings.max_retries:
            raise TransientDownloadError(f"{exc} (gave up after {attempt + 1} attempts)") from None
        delay = retry_delay(attempt, settings.retry_backoff, exc.retry_after)
        logger.warning(
            "download of %s failed (%s); retry %d/%d in %d s",
            url,
            exc,
            attempt + 1,
            settings.max_retries,
            delay,
        )
        raise self.retry(exc=exc, countdown=delay, max_retries=settings.max_retries) from None


@app.task(name="downloaderApp.list")
def list_files() -> list[dict[str, Any]]:
    """All downloaded files of the cluster: ``[{"name", "host", "bytes"}]`` sorted by name.

    Broadcasts ``downloader_list`` to every worker (``list_timeout`` seconds) and always adds
    the local listing, so a single worker, or a failed broadcast, still lists its own files.
    """
    records, _nodes = listing.collect_listing(app, get_settings(), include_local=True)
    return records


@worker_ready.connect
def _remove_stale_parts(**kwargs: Any) -> None:
    """At worker start, delete temporary files abandoned by killed workers (older than 24 h)."""
    directory = get_settings().download_dir
    for name in remove_stale_parts(directory):
        logger.warning("removed abandoned temporary file %s", directory / name)
