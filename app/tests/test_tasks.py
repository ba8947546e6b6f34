"""End-to-end: tasks sent through RabbitMQ to the real worker, fetching from loopback HTTP."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from celery.result import AsyncResult

from downloaderApp import download
from downloaderApp.errors import (
    DownloaderError,
    DownloadFailed,
    FileExists,
    ForbiddenAddress,
    InvalidArgument,
    InvalidFilename,
    InvalidURL,
    ResponseTooLarge,
    TooManyRedirects,
    TransientDownloadError,
)
from support import FIXED_BODY, TRUNCATED_LENGTH, TRUNCATED_SENT, LoopbackServer, closed_port
from testenv import MAX_BYTES, MAX_REDIRECTS, MAX_RETRIES, READ_TIMEOUT

pytestmark = pytest.mark.usefixtures("worker")

WAIT = 30


def run(url: str, name: str, **kwargs: Any) -> AsyncResult:
    result = download.apply_async(args=(url, name), kwargs=kwargs)
    result.get(timeout=WAIT, propagate=False)
    return result


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def assert_failed(result: AsyncResult, error: type[Exception], *fragments: str) -> None:
    assert result.state == "FAILURE", (result.state, result.result)
    assert type(result.result) is error, repr(result.result)
    assert isinstance(result.result, DownloaderError)
    for fragment in fragments:
        assert fragment in str(result.result)


BAD_FILENAMES = [
    pytest.param("a/b", "path separator", id="slash"),
    pytest.param("/etc/passwd", "path separator", id="absolute"),
    pytest.param("a\\b", "path separator", id="backslash"),
    pytest.param("..", "starts with a dot", id="dotdot"),
    pytest.param("a..b", "contains '..'", id="inner-dotdot"),
    pytest.param(".hidden", "starts with a dot", id="leading-dot"),
    pytest.param(".part-x", "starts with a dot", id="temp-prefix"),
    pytest.param("nul\x00byte", "U+0000", id="nul"),
    pytest.param("new\nline", "U+000A", id="newline"),
    pytest.param("del\x7f", "U+007F", id="del"),
    pytest.param("\u202etxt.exe", "U+202E", id="bidi-override"),
    pytest.param("", "empty", id="empty"),
    pytest.param("x" * 256, "256 bytes", id="256-ascii"),
    pytest.param("\u00e9" * 128, "256 bytes", id="256-bytes-utf8"),
]


@pytest.mark.parametrize(("name", "message"), BAD_FILENAMES)
def test_bad_filename_fails_without_side_effects(
    name: str, message: str, http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    path = f"/fixed?bad-name={unique}"
    before = listing(download_dir)
    result = run(http_server.url(path), name)
    assert_failed(result, InvalidFilename, message)
    assert listing(download_dir) == before
    assert http_server.hits[path] == 0  # rejected before any request


def test_non_string_filename(download_dir: Path, http_server: LoopbackServer) -> None:
    result = download.apply_async(args=(http_server.url("/fixed"), 42))
    result.get(timeout=WAIT, propagate=False)
    assert_failed(result, InvalidFilename, "must be a string")


BAD_URLS = [
    pytest.param("ftp://127.0.0.1/file", "'ftp'", id="ftp"),
    pytest.param("file:///etc/passwd", "'file'", id="file"),
    pytest.param("gopher://127.0.0.1:70/", "'gopher'", id="gopher"),
    pytest.param("javascript:alert(1)", "'javascript'", id="javascript"),
    pytest.param("127.0.0.1/fixed", "no scheme", id="no-scheme"),
    pytest.param("http://", "no host", id="no-host"),
    pytest.param("http:///fixed", "no host", id="empty-host"),
    pytest.param("http://user:secret@127.0.0.1/fixed", "credentials", id="credentials"),
    pytest.param("http://127.0.0.1:99999/", "cannot be parsed", id="bad-port"),
    pytest.param("http://127.0.0.1/a b", "whitespace", id="space"),
    pytest.param("http://127.0.0.1/a\r\nX-Injected: 1", "control", id="crlf"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_url_fails(url: str, message: str, download_dir: Path, unique: str) -> None:
    before = listing(download_dir)
    result = run(url, f"bad-url-{unique}")
    assert_failed(result, InvalidURL, message)
    assert listing(download_dir) == before


FORBIDDEN = [
    pytest.param("http://169.254.169.254/latest/meta-data/", id="cloud-metadata"),
    pytest.param("http://10.0.0.1/", id="rfc1918-10"),
    pytest.param("http://172.16.0.1/", id="rfc1918-172"),
    pytest.param("http://192.168.1.1/", id="rfc1918-192"),
    pytest.param("http://100.64.0.1/", id="cgnat"),
    pytest.param("http://0.0.0.0/", id="unspecified"),
    pytest.param("http://224.0.0.1/", id="multicast"),
    pytest.param("http://[::1]/", id="ipv6-loopback"),
    pytest.param("http://[fe80::1]/", id="ipv6-link-local"),
    pytest.param("http://[fd00::1]/", id="ipv6-ula"),
    pytest.param("http://[::ffff:169.254.169.254]/", id="ipv4-mapped"),
    pytest.param("http://[2002:a9fe:a9fe::1]/", id="6to4-of-metadata"),
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_forbidden_address_fails(url: str, download_dir: Path, unique: str) -> None:
    """Refused before connecting (the test never sends traffic to these addresses)."""
    before = listing(download_dir)
    result = run(url, f"forbidden-{unique}")
    assert_failed(result, ForbiddenAddress, "not globally routable")
    assert listing(download_dir) == before


def test_loopback_outside_allowed_networks(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    """The worker allows 127.0.0.0/8 only: 127.x works, ::1 (loopback too) is refused."""
    ok = run(http_server.url("/fixed"), f"allowed-{unique}")
    assert ok.state == "SUCCESS"
    refused = run(f"http://[::1]:{http_server.port}/fixed", f"v6-{unique}")
    assert_failed(refused, ForbiddenAddress, "::1")


def test_download_writes_exact_bytes(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    name = f"fixed-{unique}.bin"
    result = run(http_server.url("/fixed"), name)
    assert result.state == "SUCCESS", result.result
    value = result.result
    path = download_dir / name
    assert value == {
        "host": socket.gethostname(),
        "path": str(path),
        "filename": name,
        "bytes": len(FIXED_BODY),
        "sha256": hashlib.sha256(FIXED_BODY).hexdigest(),
        "content_type": "application/octet-stream",
        "url": http_server.url("/fixed"),
    }
    assert path.read_bytes() == FIXED_BODY
    assert hashlib.sha256(path.read_bytes()).hexdigest() == value["sha256"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not [n for n in listing(download_dir) if n.startswith(".part-")]


def test_unicode_name_and_exact_limit(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    name = f"r\u00e9sum\u00e9 {unique} \u2713.bin"
    result = run(http_server.url(f"/size/{MAX_BYTES}"), name)
    assert result.state == "SUCCESS", result.result
    assert (download_dir / name).stat().st_size == MAX_BYTES == result.result["bytes"]


def test_announced_too_large_is_refused_early(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    before = listing(download_dir)
    result = run(http_server.url(f"/size/{2 * MAX_BYTES}"), f"big-{unique}")
    assert_failed(result, ResponseTooLarge, "announces", f"max_bytes={MAX_BYTES}")
    assert listing(download_dir) == before


def test_unannounced_too_large_stops_at_limit(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    before = listing(download_dir)
    result = run(http_server.url(f"/size-unsized/{2 * MAX_BYTES}"), f"big-{unique}")
    assert_failed(result, ResponseTooLarge, "stopped after")
    assert listing(download_dir) == before  # the partial temporary file is gone too


def test_read_timeout_is_retried_then_fails(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    path = f"/slow/{READ_TIMEOUT * 2.5:g}?{unique}"
    before = listing(download_dir)
    started = time.monotonic()
    result = run(http_server.url(path), f"slow-{unique}")
    elapsed = time.monotonic() - started
    assert_failed(result, TransientDownloadError, "timed out", f"after {MAX_RETRIES + 1} attempts")
    assert http_server.hits[path] == MAX_RETRIES + 1
    assert elapsed < 15
    assert listing(download_dir) == before


def test_redirects_within_limit_are_followed(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    result = run(http_server.url(f"/redirect/{MAX_REDIRECTS}"), f"redir-{unique}")
    assert result.state == "SUCCESS", result.result
    assert result.result["url"] == http_server.url("/fixed")
    assert (download_dir / f"redir-{unique}").read_bytes() == FIXED_BODY


def test_redirect_limit(http_server: LoopbackServer, download_dir: Path, unique: str) -> None:
    before = listing(download_dir)
    result = run(http_server.url(f"/redirect/{MAX_REDIRECTS + 1}"), f"loop-{unique}")
    assert_failed(result, TooManyRedirects, f"max_redirects={MAX_REDIRECTS}")
    assert listing(download_dir) == before


def test_redirect_to_forbidden_address(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    target = quote("http://169.254.169.254/latest/meta-data/", safe="")
    result = run(http_server.url(f"/redirect-to?url={target}"), f"ssrf-{unique}")
    assert_failed(result, ForbiddenAddress, "169.254.169.254")
    assert not (download_dir / f"ssrf-{unique}").exists()


def test_redirect_to_other_scheme(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    target = quote("file:///etc/passwd", safe="")
    result = run(http_server.url(f"/redirect-to?url={target}"), f"scheme-{unique}")
    assert_failed(result, InvalidURL, "'file'")


def test_not_found_is_not_retried(http_server: LoopbackServer, unique: str) -> None:
    path = f"/status/404?{unique}"
    result = run(http_server.url(path), f"missing-{unique}")
    assert_failed(result, DownloadFailed, "HTTP 404")
    assert http_server.hits[path] == 1


def test_server_error_is_retried_and_succeeds(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    path = f"/flaky/{unique}"
    result = run(http_server.url(path), f"flaky-{unique}")
    assert result.state == "SUCCESS", result.result
    assert http_server.hits[path] == 2
    assert (download_dir / f"flaky-{unique}").read_bytes() == FIXED_BODY


@pytest.mark.parametrize("status", [503, 429])
def test_transient_status_gives_up_after_max_retries(
    status: int, http_server: LoopbackServer, unique: str
) -> None:
    path = f"/status/{status}?{unique}"
    result = run(http_server.url(path), f"down-{unique}")
    assert_failed(result, TransientDownloadError, f"HTTP {status}")
    assert isinstance(result.result, DownloadFailed)
    assert http_server.hits[path] == MAX_RETRIES + 1


def test_connection_refused_is_retried(download_dir: Path, unique: str) -> None:
    before = listing(download_dir)
    result = run(f"http://127.0.0.1:{closed_port()}/x", f"refused-{unique}")
    assert_failed(result, TransientDownloadError, "Connection refused", "attempts")
    assert listing(download_dir) == before


def test_interrupted_stream_leaves_no_file(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    path = f"/truncated?{unique}"
    before = listing(download_dir)
    result = run(http_server.url(path), f"cut-{unique}")
    assert_failed(
        result, TransientDownloadError, f"after {TRUNCATED_SENT} of {TRUNCATED_LENGTH} bytes"
    )
    assert http_server.hits[path] == MAX_RETRIES + 1
    assert listing(download_dir) == before


def test_one_task_id_sent_twice_runs_twice_without_failing(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    """Two copies of one task (the client's publish retried after the first copy was stored:
    the second is no redelivery) both succeed on a worker; another task for the name fails."""
    name = f"twice-{unique}.bin"
    task_id = str(uuid.uuid4())
    results = []
    for _ in range(2):
        result = download.apply_async(args=(http_server.url("/fixed"), name), task_id=task_id)
        results.append(result.get(timeout=WAIT))
    assert results[0]["sha256"] == results[1]["sha256"]
    assert_failed(run(http_server.url("/fixed"), name), FileExists, name)
    assert (download_dir / name).read_bytes() == FIXED_BODY


def test_overwrite_semantics(http_server: LoopbackServer, download_dir: Path, unique: str) -> None:
    name = f"same-{unique}.txt"
    first = run(http_server.url("/fixed"), name)
    assert first.state == "SUCCESS"

    second = run(http_server.url("/text"), name)
    assert_failed(second, FileExists, name, "overwrite=False")
    assert (download_dir / name).read_bytes() == FIXED_BODY

    third = run(http_server.url("/text"), name, overwrite=True)
    assert third.state == "SUCCESS", third.result
    assert (download_dir / name).read_bytes() == b"hello\n"
    assert third.result["content_type"] == "text/plain; charset=utf-8"
    assert not [n for n in listing(download_dir) if n.startswith(".part-")]


def test_overwrite_must_be_boolean(http_server: LoopbackServer, unique: str) -> None:
    result = run(http_server.url("/fixed"), f"flag-{unique}", overwrite="yes")
    assert_failed(result, InvalidArgument, "overwrite")


def test_tutorial_call_form(http_server: LoopbackServer, download_dir: Path, unique: str) -> None:
    """``download.delay(url, name)`` exactly as in the tutorial."""
    result = download.delay(http_server.url("/text"), f"tutorial-{unique}.txt")
    value = result.get(timeout=WAIT)
    assert value["bytes"] == 6
    assert (download_dir / f"tutorial-{unique}.txt").read_bytes() == b"hello\n"


def test_refused_reply_queue_moves_and_the_task_is_sent_once(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    """A client whose reply queue cannot be declared takes a new reply queue, sends once and
    gets the result. On a cluster the refusal is NOT_FOUND (the queue's home node is down:
    molecule/cluster proves that case); here a queue of the same name with other properties
    makes the declare fail with PRECONDITION_FAILED, the same kind of channel error."""
    from kombu import Connection

    from downloaderApp import app
    from testenv import BROKER_URL

    outcome: dict[str, Any] = {}

    def client() -> None:  # a thread of its own: its own reply queue and result backend
        old = outcome["old"] = app.thread_oid
        with Connection(BROKER_URL) as other:
            other.default_channel.queue_declare(old, durable=False, auto_delete=False)
            try:
                result = download.delay(http_server.url("/text"), f"moved-{unique}.txt")
                outcome["value"] = result.get(timeout=WAIT)
            except Exception as exc:
                outcome["error"] = exc
            finally:
                other.default_channel.queue_delete(old)
        outcome["new"] = app.thread_oid

    thread = threading.Thread(target=client)
    thread.start()
    thread.join(timeout=2 * WAIT)
    assert "error" not in outcome, repr(outcome.get("error"))
    assert outcome["value"]["bytes"] == 6
    assert outcome["new"] != outcome["old"]
    assert (download_dir / f"moved-{unique}.txt").read_bytes() == b"hello\n"


def test_other_channel_errors_are_not_taken_for_a_lost_reply_queue(unique: str) -> None:
    from amqp.exceptions import NotFound

    from downloaderApp import app

    old = app.thread_oid
    with pytest.raises(NotFound, match="no exchange"):
        download.apply_async(
            args=("http://127.0.0.1/", f"x-{unique}"), exchange=f"missing-{unique}"
        )
    assert app.thread_oid == old


def test_a_result_the_broker_refuses_does_not_hold_up_the_task(
    http_server: LoopbackServer, download_dir: Path, unique: str
) -> None:
    """With publisher confirms, RabbitMQ refuses (nacks) a result that its reply queue cannot
    take; on a cluster that happens while the queue's node goes down. The worker drops that
    result and still runs the task: before, the refused STARTED state stopped the task before
    its body ran. Here the reply queue is full for good (max-length 0, reject-publish)."""
    from kombu import Connection

    from testenv import BROKER_URL

    full, name = f"full-{unique}", f"refused-result-{unique}.txt"
    with Connection(BROKER_URL) as conn:
        channel = conn.default_channel
        channel.queue_declare(
            full,
            durable=False,
            auto_delete=False,
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        try:
            download.apply_async((http_server.url("/text"), name), reply_to=full)
            target, deadline = download_dir / name, time.monotonic() + WAIT
            while not target.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert target.exists(), f"the task did not run within {WAIT} s"
            assert target.read_bytes() == b"hello\n"
            assert channel.queue_declare(full, passive=True).message_count == 0
        finally:
            channel.queue_delete(full)
