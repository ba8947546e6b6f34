"""The download rules called directly (no worker): addresses, URLs, pinning, TLS, install."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import resource
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from downloaderApp.config import Settings
from downloaderApp.errors import (
    DownloadFailed,
    FileExists,
    ForbiddenAddress,
    InvalidURL,
    ResponseTooLarge,
    TransientDownloadError,
)
from downloaderApp.fetch import TASK_ID_XATTR, download_to_dir, remove_stale_parts
from downloaderApp.safety import check_address, parse_url, resolve_checked
from downloaderApp.tasks import retry_delay
from support import FIXED_BODY, LoopbackServer

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def settings_for(directory: Path, allowed: Sequence[str] = ("127.0.0.0/8",)) -> Settings:
    return Settings(
        download_dir=directory,
        allowed_networks=tuple(ipaddress.ip_network(n) for n in allowed),
        connect_timeout=2,
        read_timeout=2,
        max_bytes=1024 * 1024,
    )


class RecordingResolver:
    """Maps names to fixed answers and counts lookups (stands in for DNS, not for the network)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[host]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.31.255.255", "192.168.0.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.251", "240.0.0.1", "192.0.2.1",
        "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fec0::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe",
        "2001:db8::1",
    ],
)  # fmt: skip
def test_non_global_addresses_are_forbidden_by_default(address: str) -> None:
    with pytest.raises(ForbiddenAddress, match="not globally routable"):
        check_address(address, ())


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_global_addresses_are_allowed(address: str) -> None:
    assert check_address(address, ()) == address


def test_allowed_networks_open_exactly_their_range() -> None:
    allowed = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00:1::/64"))
    assert check_address("10.20.3.4", allowed) == "10.20.3.4"
    assert check_address("::ffff:10.20.3.4", allowed) == "::ffff:10.20.3.4"
    assert check_address("fd00:1::5", allowed) == "fd00:1::5"
    for refused in ("10.21.0.1", "127.0.0.1", "fd00:2::1"):
        with pytest.raises(ForbiddenAddress):
            check_address(refused, allowed)


def test_every_dns_answer_is_checked() -> None:
    """One private answer among public ones refuses the host (no connection is made)."""
    resolver = RecordingResolver({"mixed.test": ["93.184.216.34", "169.254.169.254"]})
    with pytest.raises(ForbiddenAddress, match=r"'mixed.test' resolves to address 169\.254"):
        resolve_checked(parse_url("http://mixed.test/"), (), resolver)
    public = RecordingResolver({"public.test": ["93.184.216.34", "2606:4700::1"]})
    assert resolve_checked(parse_url("http://public.test/"), (), public) == [
        "93.184.216.34",
        "2606:4700::1",
    ]


def test_loopback_is_closed_by_default(http_server: LoopbackServer, tmp_path: Path) -> None:
    path = "/fixed?closed-by-default"
    with pytest.raises(ForbiddenAddress, match=r"127\.0\.0\.1"):
        download_to_dir(http_server.url(path), "x", settings_for(tmp_path, allowed=()))
    assert http_server.hits[path] == 0
    assert list(tmp_path.iterdir()) == []


def test_connects_to_the_checked_address_with_original_host(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """One lookup per hop; the connection goes to that address; Host names the host."""
    resolver = RecordingResolver({"files.downloader.test": ["127.0.0.1"]})
    url = f"http://files.downloader.test:{http_server.port}/echo-host"
    result = download_to_dir(url, "host.txt", settings_for(tmp_path), resolver=resolver)
    assert resolver.calls == ["files.downloader.test"]
    expected = f"files.downloader.test:{http_server.port}".encode()
    assert (tmp_path / "host.txt").read_bytes() == expected
    assert result["url"] == url


def test_redirect_hops_are_resolved_and_checked_again(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    resolver = RecordingResolver(
        {"a.downloader.test": ["127.0.0.1"], "b.downloader.test": ["10.0.0.7"]}
    )
    hop = f"http://b.downloader.test:{http_server.port}/fixed"
    url = f"http://a.downloader.test:{http_server.port}/redirect-to?url={hop}"
    with pytest.raises(ForbiddenAddress, match=r"b\.downloader\.test"):
        download_to_dir(url, "hop", settings_for(tmp_path), resolver=resolver)
    assert resolver.calls == ["a.downloader.test", "b.downloader.test"]


# -- TLS: the pinned address is used, the certificate is checked against the host name ----


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    work = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=downloader test CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=work)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=secure.downloader.test",
             "-keyout", "server.key", "-out", "server.csr", cwd=work)  # fmt: skip
    (work / "ext.cnf").write_text(  # what Python 3.13's VERIFY_X509_STRICT expects too
        "subjectAltName=DNS:secure.downloader.test\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem",
             cwd=work)  # fmt: skip
    return work


@pytest.fixture(scope="module")
def https_server(tls_files: Path) -> Iterator[LoopbackServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files / "server.pem", tls_files / "server.key")
    server = LoopbackServer(ssl_context=context).start()
    try:
        yield server
    finally:
        server.stop()


def _client_context(tls_files: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files / "ca.pem"))


def test_https_verifies_the_host_name_on_the_pinned_address(
    https_server: LoopbackServer, tls_files: Path, tmp_path: Path
) -> None:
    resolver = RecordingResolver({"secure.downloader.test": ["127.0.0.1"]})
    url = f"https://secure.downloader.test:{https_server.port}/fixed"
    result = download_to_dir(
        url,
        "tls.bin",
        settings_for(tmp_path),
        resolver=resolver,
        ssl_context=_client_context(tls_files),
    )
    assert result["sha256"] == hashlib.sha256(FIXED_BODY).hexdigest()
    assert resolver.calls == ["secure.downloader.test"]


def test_https_rejects_a_certificate_for_another_name(
    https_server: LoopbackServer, tls_files: Path, tmp_path: Path
) -> None:
    resolver = RecordingResolver({"other.downloader.test": ["127.0.0.1"]})
    url = f"https://other.downloader.test:{https_server.port}/fixed"
    with pytest.raises(DownloadFailed, match="certificate"):
        download_to_dir(
            url,
            "tls.bin",
            settings_for(tmp_path),
            resolver=resolver,
            ssl_context=_client_context(tls_files),
        )
    assert list(tmp_path.iterdir()) == []


def test_https_rejects_an_untrusted_certificate(
    https_server: LoopbackServer, tmp_path: Path
) -> None:
    resolver = RecordingResolver({"secure.downloader.test": ["127.0.0.1"]})
    url = f"https://secure.downloader.test:{https_server.port}/fixed"
    with pytest.raises(DownloadFailed, match="certificate"):
        download_to_dir(url, "tls.bin", settings_for(tmp_path), resolver=resolver)


# -- URLs --------------------------------------------------------------------------------


def test_parse_url_normalises() -> None:
    target = parse_url("HTTP://Example.COM/a b?q=ä#frag".replace(" ", "%20"))
    assert (target.scheme, target.host, target.port) == ("http", "example.com", 80)
    assert target.request_target == "/a%20b?q=%C3%A4"
    assert target.url == "http://example.com/a%20b?q=%C3%A4"
    assert parse_url("https://[2001:db8::1]:8443").url == "https://[2001:db8::1]:8443/"
    assert parse_url("https://bücher.example/").host == "xn--bcher-kva.example"


def test_parse_url_rejects_long_urls() -> None:
    with pytest.raises(InvalidURL, match="longer than"):
        parse_url("http://example.com/" + "a" * 9000)


# -- installing the file -----------------------------------------------------------------


def test_redelivered_identical_download_is_idempotent(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """A redelivered message (worker lost after the rename) succeeds on identical content."""
    settings = settings_for(tmp_path)
    url = http_server.url("/fixed")
    first = download_to_dir(url, "same.bin", settings)
    with pytest.raises(FileExists):
        download_to_dir(url, "same.bin", settings)
    again = download_to_dir(url, "same.bin", settings, redelivered=True)
    assert again["sha256"] == first["sha256"]
    with pytest.raises(FileExists):
        download_to_dir(http_server.url("/text"), "same.bin", settings, redelivered=True)
    assert (tmp_path / "same.bin").read_bytes() == FIXED_BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.bin"]


def test_a_second_run_of_the_same_task_id_is_idempotent(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """A task published twice under one id (no redelivered flag on the second copy): the file
    carries the id of the task that wrote it, so the second run downloads again and succeeds on
    identical content, while another task id asking for the name gets FileExists."""
    settings = settings_for(tmp_path)
    url = http_server.url("/fixed")
    first = download_to_dir(url, "twice.bin", settings, task_id="task-1")
    assert os.getxattr(tmp_path / "twice.bin", TASK_ID_XATTR) == b"task-1"
    again = download_to_dir(url, "twice.bin", settings, task_id="task-1")
    assert again["sha256"] == first["sha256"]
    with pytest.raises(FileExists):
        download_to_dir(url, "twice.bin", settings, task_id="task-2")
    with pytest.raises(FileExists):
        download_to_dir(http_server.url("/text"), "twice.bin", settings, task_id="task-1")
    assert (tmp_path / "twice.bin").read_bytes() == FIXED_BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["twice.bin"]


def test_missing_download_dir_is_created_0750(http_server: LoopbackServer, tmp_path: Path) -> None:
    directory = tmp_path / "new" / "files"
    download_to_dir(http_server.url("/text"), "t.txt", settings_for(directory))
    assert (directory / "t.txt").read_bytes() == b"hello\n"
    assert directory.stat().st_mode & 0o777 == 0o750


def test_retry_delay_grows_and_is_bounded() -> None:
    assert retry_delay(0, 0.2) == 1  # whole seconds, at least one
    assert 2 <= retry_delay(0, 2.0) <= 3
    assert 16 <= retry_delay(3, 2.0) <= 20
    assert retry_delay(20, 2.0) == 300
    assert retry_delay(0, 2.0, retry_after=30) == 30


def test_remove_stale_parts_only_old_temporary_files(tmp_path: Path) -> None:
    old_part, new_part, old_file = tmp_path / ".part-old", tmp_path / ".part-new", tmp_path / "f"
    for path in (old_part, new_part, old_file):
        path.write_bytes(b"x")
    day_ago = time.time() - 25 * 3600
    os.utime(old_part, (day_ago, day_ago))
    os.utime(old_file, (day_ago, day_ago))
    assert remove_stale_parts(tmp_path) == [".part-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part-new", "f"]
    assert remove_stale_parts(tmp_path / "missing") == []


def test_a_short_body_with_transfer_encoding_identity_is_an_error(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """Content-Length holds unless the body is chunked: 5000 of 10000 bytes is no file."""
    url = f"http://127.0.0.1:{http_server.port}/identity-short"
    with pytest.raises(TransientDownloadError, match="after 5000 of 10000 bytes"):
        download_to_dir(url, "short.bin", settings_for(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_from_https_to_http_is_refused_unless_allowed(
    https_server: LoopbackServer, http_server: LoopbackServer, tls_files: Path, tmp_path: Path
) -> None:
    resolver = RecordingResolver(
        {"secure.downloader.test": ["127.0.0.1"], "plain.downloader.test": ["127.0.0.1"]}
    )
    hop = f"http://plain.downloader.test:{http_server.port}/fixed"
    url = f"https://secure.downloader.test:{https_server.port}/redirect-to?url={hop}"
    context = _client_context(tls_files)
    with pytest.raises(DownloadFailed, match="https to http"):
        download_to_dir(
            url, "down.bin", settings_for(tmp_path), resolver=resolver, ssl_context=context
        )
    assert resolver.calls == ["secure.downloader.test"]  # the http hop is never looked up
    assert list(tmp_path.iterdir()) == []

    allowing = dataclasses.replace(settings_for(tmp_path), allow_https_to_http_redirects=True)
    result = download_to_dir(url, "down.bin", allowing, resolver=resolver, ssl_context=context)
    assert result["url"] == hop


def test_a_trickling_server_meets_the_download_deadline(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """Each byte comes within the read timeout; the whole download does not come in time."""
    settings = dataclasses.replace(settings_for(tmp_path), read_timeout=1, download_deadline=1.5)
    started = time.monotonic()
    with pytest.raises(DownloadFailed, match=r"took longer than download_deadline=1\.5 s"):
        download_to_dir(f"http://127.0.0.1:{http_server.port}/trickle/40", "slow.bin", settings)
    assert time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["interim", "extensions", "trailers"])
def test_every_byte_read_counts_not_only_the_body(
    kind: str, http_server: LoopbackServer, tmp_path: Path
) -> None:
    """3 MiB of interim responses, chunk extensions or trailers around a 10-byte body: the
    download stops after max_bytes and the allowance for headers and framing."""
    settings = dataclasses.replace(settings_for(tmp_path), max_bytes=1024)
    with pytest.raises(ResponseTooLarge, match=r"read more than 1049600 bytes"):
        download_to_dir(f"http://127.0.0.1:{http_server.port}/flood/{kind}", "flood.bin", settings)
    assert list(tmp_path.iterdir()) == []


def test_two_downloads_racing_for_one_name_leave_one_whole_file(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """Both pass the early "exists" check; the first to finish installs its file, the other
    gets FileExists, and neither the loser's bytes nor a temporary file stay behind."""
    fast, slow = "/slow/0.5", "/trickle/4"  # b"finally\n" after 0.5 s; b"tttt" over 1 s
    outcomes: dict[str, object] = {}

    def fetch(path: str) -> None:
        try:
            outcomes[path] = download_to_dir(
                http_server.url(path), "race.bin", settings_for(tmp_path)
            )
        except Exception as exc:
            outcomes[path] = exc

    threads = [threading.Thread(target=fetch, args=(path,)) for path in (fast, slow)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert isinstance(outcomes[fast], dict), outcomes
    assert isinstance(outcomes[slow], FileExists), outcomes
    assert [p.name for p in tmp_path.iterdir()] == ["race.bin"]
    assert (tmp_path / "race.bin").read_bytes() == b"finally\n"


def test_a_write_that_fails_midway_leaves_no_file(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """The disk refuses more bytes halfway (here a file size limit of 64 KiB, EFBIG, as ENOSPC
    on a full disk): DownloadFailed naming the write, and the temporary file removed. Run in a
    forked child, so that the limit binds that child alone."""
    url = http_server.url("/size/1000000")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            os.close(read_end)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
            try:
                download_to_dir(url, "big.bin", settings_for(tmp_path))
                message = "no error"
            except DownloadFailed as exc:
                message = str(exc)
            os.write(write_end, message.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert message == "cannot write the download: File too large", message
    assert list(tmp_path.iterdir()) == []


def test_chunked_framing_overrides_a_content_length(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    """Transfer-Encoding chunked with Content-Length 4: the chunks decide (10 bytes), as the
    HTTP specification says; only then is a Content-Length not binding."""
    url = f"http://127.0.0.1:{http_server.port}/chunked-with-length"
    result = download_to_dir(url, "chunked.bin", settings_for(tmp_path))
    assert (tmp_path / "chunked.bin").read_bytes() == b"0123456789"
    assert result["bytes"] == 10
