"""The download itself: pinned connections, manual redirects, bounded streaming, atomic install.

:func:`download_to_dir` is what the ``download`` task runs; it has no Celery dependency so it can
be tested (and reused) directly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

from downloaderApp.config import Settings
from downloaderApp.errors import (
    DownloadFailed,
    FileExists,
    InvalidArgument,
    ResponseTooLarge,
    TooManyRedirects,
    TransientDownloadError,
)
from downloaderApp.safety import (
    TEMP_PREFIX,
    Resolver,
    Target,
    parse_url,
    resolve_checked,
    system_resolver,
    validate_filename,
)
from downloaderApp.version import __version__

__all__ = [
    "CHUNK_SIZE",
    "PinnedHTTPConnection",
    "PinnedHTTPSConnection",
    "download_to_dir",
    "remove_stale_parts",
]

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
DIR_MODE = 0o750
FILE_MODE = 0o640
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
OK_STATUSES = frozenset({200, 203})
TRANSIENT_STATUSES = frozenset({408, 425, 429})
USER_AGENT = f"downloader-app/{__version__}"
MAX_RETRY_AFTER = 300.0

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def default_ssl_context() -> ssl.SSLContext:
    """One shared verifying client context (system CA store, hostname checking on)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context()
        return _ssl_context


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to ``host`` that connects to an already checked IP address.

    ``host`` is only used for the ``Host`` header (and SNI / certificate checks for HTTPS):
    no second DNS lookup happens, so a DNS answer cannot change between check and connect
    (DNS rebinding).
    """

    def __init__(
        self, host: str, port: int, address: str, connect_timeout: float, read_timeout: float
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self.pinned_address = address
        self.read_timeout = read_timeout

    def _open_socket(self) -> socket.socket:
        sock = socket.create_connection((self.pinned_address, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # pragma: no cover - platform specific
            if exc.errno != errno.ENOPROTOOPT:
                sock.close()
                raise
        return sock

    def connect(self) -> None:
        sock = self._open_socket()
        sock.settimeout(self.read_timeout)
        self.sock = sock


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """HTTPS variant: TLS with SNI and certificate verification against the host *name*."""

    default_port = 443

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        connect_timeout: float,
        read_timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, address, connect_timeout, read_timeout)
        self.ssl_context = context

    def connect(self) -> None:
        sock = self._open_socket()  # the handshake runs under connect_timeout
        try:
            tls = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        tls.settimeout(self.read_timeout)
        self.sock = tls


def _connect(
    target: Target, addresses: list[str], settings: Settings, context: ssl.SSLContext
) -> http.client.HTTPConnection:
    """Connect to the first checked address that answers."""
    failures: list[str] = []
    for address in addresses:
        conn: PinnedHTTPConnection
        if target.scheme == "https":
            conn = PinnedHTTPSConnection(
                target.host,
                target.port,
                address,
                settings.connect_timeout,
                settings.read_timeout,
                context,
            )
        else:
            conn = PinnedHTTPConnection(
                target.host, target.port, address, settings.connect_timeout, settings.read_timeout
            )
        try:
            conn.connect()
            return conn
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise DownloadFailed(
                f"TLS certificate of {target.host} is not valid: {exc.verify_message}"
            ) from None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            conn.close()
            failures.append(f"{address}: TLS connection closed ({exc})")
        except ssl.SSLError as exc:
            conn.close()
            raise DownloadFailed(f"TLS handshake with {target.host} failed: {exc}") from None
        except TimeoutError:
            conn.close()
            failures.append(f"{address}: connect timed out after {settings.connect_timeout:g} s")
        except OSError as exc:
            conn.close()
            failures.append(f"{address}: {exc.strerror or exc}")
    raise TransientDownloadError(
        f"cannot connect to {target.host} port {target.port}: {'; '.join(failures)}"
    )


def _transient(target: Target, what: str, exc: BaseException) -> TransientDownloadError:
    if isinstance(exc, TimeoutError):
        detail = "timed out"
    elif isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    else:
        detail = str(exc) or type(exc).__name__
    return TransientDownloadError(f"{what} {target.url}: {detail}")


def _request(conn: http.client.HTTPConnection, target: Target) -> http.client.HTTPResponse:
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }
    try:
        conn.request("GET", target.request_target, headers=headers)
        return conn.getresponse()
    except (OSError, http.client.IncompleteRead) as exc:
        raise _transient(target, "no response from", exc) from None
    except http.client.HTTPException as exc:
        raise DownloadFailed(f"invalid HTTP response from {target.url}: {exc!r}") from None


def _retry_after(response: http.client.HTTPResponse) -> float | None:
    value = response.getheader("Retry-After")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _check_status(response: http.client.HTTPResponse, target: Target) -> None:
    status = response.status
    if status in OK_STATUSES:
        return
    message = f"HTTP {status} {response.reason} from {target.url}"
    if status in TRANSIENT_STATUSES or 500 <= status <= 599:
        error = TransientDownloadError(message)
        error.retry_after = _retry_after(response)
        raise error
    if 400 <= status <= 499:
        raise DownloadFailed(message)
    raise DownloadFailed(f"unexpected {message}")


def _content_length(response: http.client.HTTPResponse) -> int | None:
    # Only chunked framing replaces Content-Length (http.client reads the body by chunks then);
    # with any other Transfer-Encoding (identity...) the length still holds, and a shorter
    # body is an error like any other.
    codings = (response.getheader("Transfer-Encoding") or "").lower().split(",")
    if codings[-1].strip() == "chunked":
        return None
    value = response.getheader("Content-Length")
    if value is None:
        return None
    try:
        length = int(value.strip())
    except ValueError:
        raise DownloadFailed(f"invalid Content-Length {value!r}") from None
    if length < 0:
        raise DownloadFailed(f"invalid Content-Length {value!r}")
    return length


def _copy_body(
    response: http.client.HTTPResponse,
    out: IO[bytes],
    target: Target,
    max_bytes: int,
    expected: int | None,
) -> tuple[int, str]:
    """Stream the body to ``out``; stop as soon as it exceeds ``max_bytes``."""
    digest = hashlib.sha256()
    total = 0
    while True:
        try:
            chunk = response.read(CHUNK_SIZE)
        except (OSError, http.client.IncompleteRead) as exc:
            raise _transient(target, f"connection broken after {total} bytes of", exc) from None
        except http.client.HTTPException as exc:
            raise DownloadFailed(f"invalid HTTP body from {target.url}: {exc!r}") from None
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise ResponseTooLarge(
                f"response from {target.url} is larger than max_bytes={max_bytes} "
                f"(stopped after {total} bytes)"
            )
        try:
            out.write(chunk)
        except OSError as exc:
            raise DownloadFailed(f"cannot write the download: {exc.strerror}") from None
        digest.update(chunk)
    if expected is not None and total != expected:
        raise TransientDownloadError(
            f"connection closed after {total} of {expected} bytes from {target.url}"
        )
    return total, digest.hexdigest()


def ensure_dir(directory: Path) -> None:
    """Create the download directory (mode 0750) if it is missing."""
    if directory.is_dir():
        return
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadFailed(
            f"cannot create download_dir {directory}: {exc.strerror or exc}"
        ) from None


STALE_PART_AGE = 24 * 3600.0


def remove_stale_parts(directory: Path, max_age: float = STALE_PART_AGE) -> list[str]:
    """Delete ``.part-*`` files older than ``max_age`` seconds; return their names.

    They are what a worker killed in the middle of a download (SIGKILL, power loss) leaves
    behind; a running download rewrites its temporary file all the time, so only abandoned
    ones get that old.
    """
    removed: list[str] = []
    limit = time.time() - max_age
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < limit:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue
    return removed


def _sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(CHUNK_SIZE), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse directory fsync
        pass
    finally:
        os.close(fd)


_NO_HARDLINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK, errno.EXDEV}
)


def _install(temp: Path, final: Path, overwrite: bool, sha256: str) -> None:
    """Move the complete temporary file to its name; never overwrite unless asked to.

    ``overwrite=True``: ``os.replace`` (atomic). ``overwrite=False``: ``os.link`` then unlink
    the temporary name: ``link`` fails with EEXIST atomically if the name exists, so two
    workers racing for one name cannot overwrite each other (a check-then-rename would have a
    window). If the existing file has exactly the bytes just downloaded the call succeeds
    (idempotent redelivery); otherwise it is :class:`FileExists`. File systems without hard
    links fall back to check-then-rename.
    """
    if overwrite:
        try:
            os.replace(temp, final)
        except OSError as exc:
            raise DownloadFailed(f"cannot write {final}: {exc.strerror or exc}") from None
        return
    try:
        os.link(temp, final)
    except FileExistsError:
        if final.is_file() and not final.is_symlink() and _sha256_of(final) == sha256:
            log.info("%s exists with identical content: nothing to do", final)
            os.unlink(temp)
            return
        raise FileExists(
            f"{final.name} exists already in {final.parent} (overwrite=False)"
        ) from None
    except OSError as exc:
        if exc.errno not in _NO_HARDLINKS:
            raise DownloadFailed(f"cannot write {final}: {exc.strerror or exc}") from None
        if os.path.lexists(final):
            raise FileExists(
                f"{final.name} exists already in {final.parent} (overwrite=False)"
            ) from None
        os.rename(temp, final)
        return
    os.unlink(temp)


def _store(
    response: http.client.HTTPResponse,
    target: Target,
    final: Path,
    settings: Settings,
    overwrite: bool,
    expected: int | None,
) -> tuple[int, str]:
    ensure_dir(final.parent)
    try:
        fd, temp_name = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX)
    except OSError as exc:
        raise DownloadFailed(
            f"cannot create a file in {final.parent}: {exc.strerror or exc}"
        ) from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, sha256 = _copy_body(response, out, target, settings.max_bytes, expected)
            try:
                out.flush()
                os.fchmod(out.fileno(), FILE_MODE)
                os.fsync(out.fileno())
            except OSError as exc:
                raise DownloadFailed(f"cannot write the download: {exc.strerror}") from None
        _install(temp, final, overwrite, sha256)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_dir(final.parent)
    return size, sha256


def download_to_dir(
    url: object,
    filename: object,
    settings: Settings,
    *,
    overwrite: object = False,
    redelivered: bool = False,
    resolver: Resolver = system_resolver,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Download ``url`` into ``settings.download_dir / filename``; see the README for the rules.

    ``redelivered`` (the broker redelivered this message after a lost worker) skips the
    early "file exists" check: the first delivery may have completed the file, and the final
    install then succeeds if the content is identical.
    """
    name = validate_filename(filename)
    if not isinstance(overwrite, bool):
        raise InvalidArgument(f"overwrite must be true or false, not {overwrite!r}")
    target = parse_url(url)
    final = settings.download_dir / name
    if not overwrite and not redelivered and os.path.lexists(final):
        raise FileExists(f"{name} exists already in {settings.download_dir} (overwrite=False)")
    context = ssl_context or default_ssl_context()

    redirects = 0
    while True:
        addresses = resolve_checked(target, settings.allowed_networks, resolver)
        conn = _connect(target, addresses, settings, context)
        try:
            response = _request(conn, target)
            if response.status in REDIRECT_STATUSES:
                location = response.getheader("Location")
                if not location:
                    raise DownloadFailed(
                        f"HTTP {response.status} redirect without Location from {target.url}"
                    )
                if redirects >= settings.max_redirects:
                    raise TooManyRedirects(
                        f"more than max_redirects={settings.max_redirects} redirects "
                        f"(last from {target.url})"
                    )
                redirects += 1
                hop = parse_url(urljoin(target.url, location.strip()))
                if (
                    target.scheme == "https"
                    and hop.scheme == "http"
                    and not settings.allow_https_to_http_redirects
                ):
                    raise DownloadFailed(
                        f"redirect from {target.url} to {hop.url} refused: https to http "
                        "(allow_https_to_http_redirects is false)"
                    )
                target = hop
                continue
            _check_status(response, target)
            expected = _content_length(response)
            if expected is not None and expected > settings.max_bytes:
                raise ResponseTooLarge(
                    f"response from {target.url} announces {expected} bytes, more than "
                    f"max_bytes={settings.max_bytes}"
                )
            size, sha256 = _store(response, target, final, settings, overwrite, expected)
            return {
                "host": socket.gethostname(),
                "path": str(final),
                "filename": name,
                "bytes": size,
                "sha256": sha256,
                "content_type": response.getheader("Content-Type"),
                "url": target.url,
            }
        finally:
            conn.close()
