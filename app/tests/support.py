"""A real HTTP(S) server on loopback for the tests, with misbehaving endpoints.

Endpoints (GET):
  /fixed                 FIXED_BODY, with Content-Length
  /text                  b"hello\\n", text/plain
  /size/N                N bytes with Content-Length
  /size-unsized/N        N bytes, no Content-Length (body ends when the connection closes)
  /slow/S                sleeps S seconds before answering
  /redirect/N            N redirects, then /fixed
  /redirect-to?url=U     one redirect to U
  /status/CODE           always answers CODE
  /flaky/KEY             500 on the first request per KEY, then FIXED_BODY
  /truncated             announces 10000 bytes, sends 5000, closes the connection
  /identity-short        the same with Transfer-Encoding: identity
  /chunked-with-length   b"0123456789" in two chunks, with a wrong Content-Length: 4
  /echo-host             the Host header it received, as the body
  /trickle/N             a 200 announcing N bytes, then one byte every 0.25 s
  /flood/KIND            3 MiB of what is not body, then a 10-byte body: KIND interim (100
                         Continue responses), extensions (1-byte chunks with long chunk
                         extensions) or trailers (trailer fields after the last chunk)
Every request is counted per path (with query) in ``hits``.

Also ``run_unprivileged``: a function run in a forked child that file permissions bite (as
nobody when the tests run as root); ``FreezingProxy``: a TCP relay to the broker whose link can
be made to go silent; ``rabbitmqctl``: a change to the test broker (users, policies).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXED_BODY = bytes(range(256)) * 40  # 10240 bytes
TRUNCATED_LENGTH = 10000
TRUNCATED_SENT = 5000
FLOOD_BYTES = 3 * 1024 * 1024


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A worker's 64 threads may connect at once; socketserver's default backlog is 5.
    request_queue_size = 128

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ssl_context = ssl_context
        self.hits: Counter[str] = Counter()
        self.host_headers: list[str] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            sock.settimeout(5)
            sock = self.ssl_context.wrap_socket(sock, server_side=True)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hang up on purpose (too large, timeouts): no tracebacks

    def start(self) -> LoopbackServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
        length: int | None = -1,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length == -1:
            length = len(body)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def _stream(self, size: int, with_length: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if with_length:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b"x" * 65536
        sent = 0
        try:
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                self.wfile.write(piece)
                sent += len(piece)
        except OSError:
            pass

    def _raw(self, data: bytes) -> bool:
        """Write DATA as is; False once the client has gone."""
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            return False
        return True

    def _trickle(self, size: int) -> None:
        head = f"HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
        if self._raw(head):
            for _ in range(size):
                time.sleep(0.25)
                if not self._raw(b"t"):
                    break
        self.close_connection = True

    def _flood(self, kind: str) -> None:
        limit, sent = FLOOD_BYTES, 0
        if kind == "interim":
            piece = b"HTTP/1.1 100 Continue\r\n\r\n"
            while sent < limit and self._raw(piece * 1000):
                sent += len(piece) * 1000
            self._raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
        else:
            self._raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            if kind == "extensions":
                piece = b"1;" + b"e" * 60000 + b"\r\nx\r\n"
                while sent < limit and self._raw(piece):
                    sent += len(piece)
                self._raw(b"0\r\n\r\n")
            else:
                self._raw(b"a\r\n0123456789\r\n0\r\n")
                piece = b"X-Trailer: " + b"t" * 60000 + b"\r\n"
                while sent < limit and self._raw(piece):
                    sent += len(piece)
                self._raw(b"\r\n")
        self.close_connection = True

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits[self.path] += 1
            self.server.host_headers.append(self.headers.get("Host", ""))
        parts = urlsplit(self.path)
        segments = [s for s in parts.path.split("/") if s]
        head = segments[0] if segments else ""
        arg = segments[1] if len(segments) > 1 else ""
        if head == "fixed":
            self._send(200, FIXED_BODY)
        elif head == "text":
            self._send(200, b"hello\n", "text/plain; charset=utf-8")
        elif head == "size":
            self._stream(int(arg), with_length=True)
        elif head == "size-unsized":
            self._stream(int(arg), with_length=False)
        elif head == "slow":
            time.sleep(float(arg))
            self._send(200, b"finally\n", "text/plain")
        elif head == "redirect":
            remaining = int(arg)
            location = f"/redirect/{remaining - 1}" if remaining > 1 else "/fixed"
            self._send(302, b"", headers={"Location": location})
        elif head == "redirect-to":
            location = parse_qs(parts.query)["url"][0]
            self._send(302, b"", headers={"Location": location})
        elif head == "status":
            self._send(int(arg), f"status {arg}\n".encode(), "text/plain")
        elif head == "flaky":
            with self.server.lock:
                first = self.server.hits[self.path] == 1
            if first:
                self._send(500, b"try again\n", "text/plain")
            else:
                self._send(200, FIXED_BODY)
        elif head in ("truncated", "identity-short"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(TRUNCATED_LENGTH))
            if head == "identity-short":
                self.send_header("Transfer-Encoding", "identity")
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(b"t" * TRUNCATED_SENT)
                self.wfile.flush()
            self.close_connection = True
        elif head == "trickle":
            self._trickle(int(arg))
        elif head == "chunked-with-length":
            self._raw(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
                b"6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n"
            )
            self.close_connection = True
        elif head == "flood":
            self._flood(arg)
        elif head == "echo-host":
            self._send(200, self.headers.get("Host", "").encode(), "text/plain")
        else:
            self._send(404, b"not found\n", "text/plain")


BIN = Path(sys.executable).parent / "downloader"


def downloader(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    # Without the installed script, the same entry point through the module.
    script = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "downloaderApp"]
    command = [*script, *args]
    return subprocess.run(
        command,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl on the test broker's host (this one); FAILS when it is missing."""
    import pytest

    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to change the test broker", pytrace=False)
    done = subprocess.run(
        ["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return done.stdout


def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


NOBODY = 65534  # uid and gid of Debian's "nobody" / "nogroup"


@dataclass(frozen=True)
class ChildResult:
    code: int
    stdout: str
    stderr: str


def run_unprivileged(func: Callable[[], int | None], timeout: float = 60) -> ChildResult:
    """Run ``func`` in a forked child that permissions bite: as uid/gid 65534 (nobody, no
    supplementary groups) when the tests run as root, as the tests' own user otherwise.

    Forked, not executed: the child keeps the modules already imported (an interpreter
    installed under a private /root could not be started as nobody). It can import more
    only from where that user may read, the source tree included. ``func``'s return value
    (or ``SystemExit``'s code) is the exit code; fd 1 and 2 are captured.
    """
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 70
            try:
                os.dup2(out_file.fileno(), 1)
                os.dup2(err_file.fileno(), 2)
                sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), "utf-8")
                sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), "utf-8")
                os.chdir("/")
                if os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                try:
                    result = func()
                except SystemExit as exc:
                    result = exc.code if isinstance(exc.code, int) else 1
                code = 0 if result is None else result
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the unprivileged child did not end within {timeout} s")
            time.sleep(0.02)
        out_file.seek(0)
        err_file.seek(0)
        return ChildResult(
            os.waitstatus_to_exitcode(status),
            out_file.read().decode(errors="replace"),
            err_file.read().decode(errors="replace"),
        )


def forget_downloader_app() -> None:
    """Drop ``downloaderApp`` from ``sys.modules`` (in a child): the next import is fresh,
    as in a new ``celery -A downloaderApp ...`` or ``downloader`` process."""
    for name in [n for n in sys.modules if n == "downloaderApp" or n.startswith("downloaderApp.")]:
        del sys.modules[name]


class FreezingProxy:
    """A TCP relay on loopback to TARGET (host, port), for a link that goes silent: after
    ``freeze()`` it passes no byte either way and closes nothing, as a cut network or a hung
    peer does (the broker sees missed heartbeats, the client no answer)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.getsockname()[1])

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closed.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the client sees its connection refused, as without a relay
                continue
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            # Frozen: what arrived is held, and nothing more is read.
            while self.frozen.is_set() and not self.closed.is_set():
                time.sleep(0.1)
            if self.closed.is_set():
                return
            if not data:
                return
            try:
                sink.sendall(data)
            except OSError:
                return
