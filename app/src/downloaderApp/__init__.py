"""downloaderApp: the downloader application of the Celery + RabbitMQ tutorial.

``from downloaderApp import app, download, list`` gives the Celery app and the two tasks,
registered as ``downloaderApp.download`` and ``downloaderApp.list``; importing the package also
registers the ``downloader_list`` worker remote-control command.
"""

from __future__ import annotations

from downloaderApp.celery_app import app
from downloaderApp.tasks import download
from downloaderApp.tasks import list_files as list
from downloaderApp.version import __version__

__all__ = ["__version__", "app", "download", "list"]
