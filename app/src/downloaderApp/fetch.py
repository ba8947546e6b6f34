"""The download itself: pinned connections, manual redirects, bounded streaming, atomic install.

:func:`download_to_dir` is what the ``download`` task runs; it has no Celery dependency so it can
be tested (and reused) directly.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import io
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
# Bytes a download may read from its connections besides max_bytes of body: status lines,
# headers, interim (1xx) responses, chunk framing and trailers, over every redirect hop.
WIRE_OVERHEAD = 1024 * 1024

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def default_ssl_context() -> ssl.SSLContext:
    """One shared verifying client context (system CA store, hostname checking on)."""
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = ssl.create_default_context()
        return _ssl_context


class _OverBudget(Exception):
    """Raised inside http.client's reads; not a ValueError, which http.client would turn
    into IncompleteRead (the app's errors are ValueErrors). download_to_dir raises ``error``."""

    def __init__(self, error: DownloadFailed | ResponseTooLarge) -> None:
        super().__init__(str(error))
        self.error = error


class Budget:
    """What one download may spend on its connections: a deadline (``download_deadline`` from
    its start) and a number of bytes read (``max_bytes`` plus :data:`WIRE_OVERHEAD`), counted on
    every read of the socket, so that they hold on every pool (the thread pool ignores Celery's
    time limits) and for every part of a response, not only the body."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.deadline = time.monotonic() + settings.download_deadline
        self.seconds = settings.download_deadline
        self.max_read = settings.max_bytes + WIRE_OVERHEAD
        self.read = 0
        self.url = url

    def timeout(self, read_timeout: float) -> float:
        """The timeout of the next read: ``read_timeout``, or less when the deadline is near."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.late()
        return min(read_timeout, left)

    def late(self) -> _OverBudget:
        return _OverBudget(
            DownloadFailed(
                f"download of {self.url} took longer than download_deadline={self.seconds:g} s"
            )
        )

    def count(self, n: int) -> None:
        self.read += n
        if self.read > self.max_read:
            raise _OverBudget(
                ResponseTooLarge(
                    f"read more than {self.max_read} bytes (max_bytes and {WIRE_OVERHEAD} bytes "
                    f"of headers and framing) from {self.url}"
                )
            )


class _BudgetReader(io.RawIOBase):
    """The socket's reads for http.client, each under the budget's timeout and count."""

    def __init__(self, owner: _BudgetSocket, budget: Budget, read_timeout: float) -> None:
        self.owner, self.sock = owner, owner._sock
        self.budget, self.read_timeout = budget, read_timeout

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            super().close()
            self.owner._reader_closed()

    def readinto(self, buffer: Any) -> int:
        timeout = self.budget.timeout(self.read_timeout)
        self.sock.settimeout(timeout)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            if timeout < self.read_timeout:
                raise self.budget.late() from None
            raise
        self.budget.count(n)
        return n


class _BudgetSocket:
    """The connection's socket as http.client sees it: its responses read through
    :class:`_BudgetReader`, everything else (sendall...) the socket's own. Like a socket's own
    makefile, an open reader keeps the socket open after close() (http.client closes the
    connection of a "Connection: close" response before reading its body)."""

    def __init__(self, sock: socket.socket, budget: Budget, read_timeout: float) -> None:
        self._sock, self._budget, self._read_timeout = sock, budget, read_timeout
        self._readers = 0
        self._closing = False

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        assert mode == "rb", mode
        self._readers += 1
        return io.BufferedReader(_BudgetReader(self, self._budget, self._read_timeout))

    def _reader_closed(self) -> None:
        self._readers -= 1
        if self._closing and self._readers == 0:
            self._sock.close()

    def close(self) -> None:
        self._closing = True
        if self._readers == 0:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to ``host`` that connects to an already checked IP address.

    ``host`` is only used for the ``Host`` header (and SNI / certificate checks for HTTPS):
    no second DNS lookup happens, so a DNS answer cannot change between check and connect
    (DNS rebinding).
    """

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        connect_timeout: float,
        read_timeout: float,
        budget: Budget | None = None,
    ) -> None:
        super().__init__(host, port, timeout=connect_timeout)
        self.pinned_address = address
        self.read_timeout = read_timeout
        self.budget = budget

    def _bounded(self, sock: socket.socket) -> Any:
        sock.settimeout(self.read_timeout)
        return sock if self.budget is None else _BudgetSocket(sock, self.budget, self.read_timeout)

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
        self.sock = self._bounded(self._open_socket())


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
        budget: Budget | None = None,
    ) -> None:
        super().__init__(host, port, address, connect_timeout, read_timeout, budget)
        self.ssl_context = context

    def connect(self) -> None:
        sock = self._open_socket()  # the handshake runs under connect_timeout
        try:
            tls = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = self._bounded(tls)


def _connect(
    target: Target,
    addresses: list[str],
    settings: Settings,
    context: ssl.SSLContext,
    budget: Budget,
) -> http.client.HTTPConnection:
    """Connect to the first checked address that answers."""
    failures: list[str] = []
    for address in addresses:
        conn: PinnedHTTPConnection
        pinned = (
            target.host,
            target.port,
            address,
            settings.connect_timeout,
            settings.read_timeout,
        )
        if target.scheme == "https":
            conn = PinnedHTTPSConnection(*pinned, context, budget)
        else:
            conn = PinnedHTTPConnection(*pinned, budget)
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


# The id of the task that wrote a file, kept on the file (an extended attribute, set on the
# temporary file so that the name never shows without it): a second run of that task id is
# told from another task that asks for the same name.
TASK_ID_XATTR = "user.downloader.task_id"


def _mark_task(fd: int, task_id: str | None) -> None:
    if not task_id:
        return
    try:
        os.setxattr(fd, TASK_ID_XATTR, task_id.encode())
    except OSError as exc:  # a file system without user xattrs: only the marker is lost
        log.debug("cannot record the task id on the download: %s", exc)


def _written_by(path: Path, task_id: str | None) -> bool:
    """Whether the file at PATH was written by the task TASK_ID (its marker says so)."""
    if not task_id:
        return False
    try:
        return os.getxattr(path, TASK_ID_XATTR, follow_symlinks=False) == task_id.encode()
    except OSError:
        return False


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
    task_id: str | None,
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
                _mark_task(out.fileno(), task_id)
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
    task_id: str | None = None,
    resolver: Resolver = system_resolver,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Download ``url`` into ``settings.download_dir / filename``; see the README for the rules.

    ``redelivered`` (the broker redelivered this message after a lost worker) skips the
    early "file exists" check: the first delivery may have completed the file, and the final
    install then succeeds if the content is identical. So does a file that ``task_id`` wrote
    (its marker, :data:`TASK_ID_XATTR`): a second copy of one task, which the broker does not
    flag as redelivered (a publish that the client retried after its first copy was stored).
    """
    name = validate_filename(filename)
    if not isinstance(overwrite, bool):
        raise InvalidArgument(f"overwrite must be true or false, not {overwrite!r}")
    target = parse_url(url)
    final = settings.download_dir / name
    again = redelivered or _written_by(final, task_id)
    if not overwrite and not again and os.path.lexists(final):
        raise FileExists(f"{name} exists already in {settings.download_dir} (overwrite=False)")
    context = ssl_context or default_ssl_context()

    budget = Budget(settings, target.url)
    try:
        redirects = 0
        while True:
            addresses = resolve_checked(target, settings.allowed_networks, resolver)
            conn = _connect(target, addresses, settings, context, budget)
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
                size, sha256 = _store(
                    response, target, final, settings, overwrite, expected, task_id
                )
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
    except _OverBudget as over:
        raise over.error from None
