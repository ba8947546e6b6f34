"""Exceptions of the downloader.

Every error a task can end with is a :class:`DownloaderError`, a ``ValueError`` whose only
argument is a human-readable message: Celery's JSON result serializer stores it as
``{"exc_type", "exc_message", "exc_module"}`` and a client that has imported this package gets
the very same class back from ``AsyncResult.get()`` / ``AsyncResult.result``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigUnreadable",
    "DownloadFailed",
    "DownloaderError",
    "FileExists",
    "ForbiddenAddress",
    "InvalidArgument",
    "InvalidFilename",
    "InvalidURL",
    "ResponseTooLarge",
    "TooManyRedirects",
    "TransientDownloadError",
]


class DownloaderError(ValueError):
    """Base class of every error a download or listing task ends with."""


class InvalidArgument(DownloaderError):
    """A task argument has the wrong type (for example ``overwrite`` is not a boolean)."""


class InvalidFilename(DownloaderError):
    """The target file name is not a plain, safe name inside the download directory."""


class InvalidURL(DownloaderError):
    """The URL is not an absolute http(s) URL with a host, or cannot be sent as is."""


class ForbiddenAddress(DownloaderError):
    """The host resolves to an address that is not globally routable nor allowed."""


class TooManyRedirects(DownloaderError):
    """The server redirected more often than ``max_redirects`` allows."""


class ResponseTooLarge(DownloaderError):
    """The response body is (or announces to be) larger than ``max_bytes``."""


class FileExists(DownloaderError):
    """The target file exists already and ``overwrite`` was not requested."""


class DownloadFailed(DownloaderError):
    """The download failed for a reason that retrying will not fix (HTTP 4xx, TLS, DNS...)."""


class TransientDownloadError(DownloadFailed):
    """A failure that may go away by itself: timeouts, resets, refused connections, HTTP 5xx/429.

    The ``download`` task retries these with exponential backoff (``max_retries`` times) and
    ends with this error when the retries are used up. ``retry_after`` carries the seconds a
    server asked for in a ``Retry-After`` header; it is not serialized with the result.
    """

    retry_after: float | None = None


class ConfigError(ValueError):
    """The configuration file or a ``DOWNLOADER_*`` environment variable is invalid."""


class ConfigUnreadable(ConfigError):
    """The configuration file exists (or its directory may not be searched, so whether it
    exists cannot be told) but this user may not read it.

    Never replaced by the built-in defaults: they would point the user at a broker on
    localhost. ``path`` is the file, ``group`` the group that owns what denied access (the file
    or the directory that may not be searched), by name or, without one, by number.
    """

    def __init__(self, message: str, path: str, group: str) -> None:
        super().__init__(message)
        self.path = path
        self.group = group

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        return type(self), (str(self), self.path, self.group)
