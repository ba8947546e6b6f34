"""Input rules: safe file names, acceptable URLs and reachable addresses.

Pure functions without I/O apart from the DNS lookup in :func:`system_resolver`, so that the
rules can be tested directly (and property-tested for file names).
"""

from __future__ import annotations

import ipaddress
import socket
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from downloaderApp.config import IPNetwork
from downloaderApp.errors import (
    DownloadFailed,
    ForbiddenAddress,
    InvalidFilename,
    InvalidURL,
    TransientDownloadError,
)
from downloaderApp.special_addresses import block_of, is_public

__all__ = [
    "MAX_FILENAME_BYTES",
    "MAX_URL_LENGTH",
    "TEMP_PREFIX",
    "Resolver",
    "Target",
    "check_address",
    "parse_url",
    "resolve_checked",
    "system_resolver",
    "validate_filename",
]

MAX_FILENAME_BYTES = 255
MAX_URL_LENGTH = 8192
TEMP_PREFIX = ".part-"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


def _show(text: str, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


# Characters that show as blank space although they are letters or symbols (Hangul fillers,
# the blank Braille pattern), besides the space separators (Unicode category Zs).
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Look like a path separator without being one (those of NFKC are found through NFKC).
_SLASH_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f9\u2216\u2571\u2572")


def _blank(char: str) -> bool:
    return unicodedata.category(char) == "Zs" or char in _FILLERS


def validate_filename(name: object) -> str:
    """Return ``name`` in Unicode NFC if it is a plain file name that stays inside the download
    directory and shows as what it is in a listing.

    Refused: non-strings, the empty name, names longer than 255 bytes in UTF-8, names with a
    ``/`` or ``\\``, names starting with a dot (``.``, ``..``, hidden files and the ``.part-``
    temporary files), names containing ``..``, names with control or other invisible
    characters (Unicode categories C* and Zl/Zp: NUL, newlines, DEL, bidi overrides,
    zero-width characters, surrogates, line/paragraph separators...), names made only of blanks
    or that begin or end with one (spaces of any width, Hangul fillers), and names with a
    look-alike of a separator or of a dot (U+FF0E FULLWIDTH FULL STOP, U+2215 DIVISION SLASH,
    U+FF0F FULLWIDTH SOLIDUS...). NFC makes the
    composed and the decomposed ``café`` one name.
    """
    if not isinstance(name, str):
        raise InvalidFilename(f"filename must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidFilename("filename is empty")
    for char in name:
        category = unicodedata.category(char)
        if category.startswith("C") or category in ("Zl", "Zp"):
            raise InvalidFilename(
                f"filename {_show(name)} contains a control or invisible character "
                f"U+{ord(char):04X}"
            )
    name = unicodedata.normalize("NFC", name)
    if all(_blank(char) for char in name):
        raise InvalidFilename(f"filename {_show(name)} is made only of blanks")
    if _blank(name[0]) or _blank(name[-1]):
        raise InvalidFilename(f"filename {_show(name)} begins or ends with a blank")
    if "/" in name or "\\" in name:
        raise InvalidFilename(f"filename {_show(name)} contains a path separator ('/' or '\\')")
    if name.startswith("."):
        raise InvalidFilename(f"filename {_show(name)} starts with a dot")
    if ".." in name:
        raise InvalidFilename(f"filename {_show(name)} contains '..'")
    compatible = unicodedata.normalize("NFKC", name)
    if (
        any(char in _SLASH_LOOKALIKES for char in name)
        or any(sep in compatible for sep in ("/", "\\", ".."))
        or compatible.startswith(".")
    ):
        raise InvalidFilename(
            f"filename {_show(name)} contains a look-alike of a path separator or of a dot"
        )
    size = len(name.encode("utf-8"))
    if size > MAX_FILENAME_BYTES:
        raise InvalidFilename(
            f"filename {_show(name)} is {size} bytes long in UTF-8, more than "
            f"{MAX_FILENAME_BYTES} bytes"
        )
    return name


@dataclass(frozen=True)
class Target:
    """A validated http(s) URL, split into what the connection needs."""

    url: str  # normalised URL (no fragment), as reported back
    scheme: str  # "http" or "https"
    host: str  # ASCII host name (IDNA) or IP literal without brackets
    port: int
    request_target: str  # path and query, percent-encoded ASCII


def _ascii_host(hostname: str, url: str) -> str:
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        pass
    try:
        host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidURL(f"URL {_show(url)} has an invalid host name") from None
    if not host or any(ch in host for ch in " %/\\@"):
        raise InvalidURL(f"URL {_show(url)} has an invalid host name")
    return host


def parse_url(url: object) -> Target:
    """Validate ``url``: absolute http/https URL with a host, no credentials, sendable."""
    if not isinstance(url, str):
        raise InvalidURL(f"URL must be a string, not {type(url).__name__}")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise InvalidURL(f"URL {_show(url)} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"URL {_show(url)} cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme!r}" if scheme else "no scheme"
        raise InvalidURL(f"URL {_show(url)} has {shown}: only http and https are allowed")
    if not parts.hostname:
        raise InvalidURL(f"URL {_show(url)} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL(f"URL {_show(url)} contains credentials, which are not supported")
    host = _ascii_host(parts.hostname, url)
    if port is None:
        port = 443 if scheme == "https" else 80
    if port == 0:
        raise InvalidURL(f"URL {_show(url)} has port 0")
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=~-._?")
    request_target = path + ("?" + query if query else "")
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{port}"
    normalised = urlunsplit((scheme, netloc, path, query, ""))
    return Target(
        url=normalised, scheme=scheme, host=host, port=port, request_target=request_target
    )


def _normalise(address: str) -> IPAddress:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_address(address: str, allowed_networks: Iterable[IPNetwork], host: str = "") -> str:
    """Return ``address`` if downloads may connect to it, else raise :class:`ForbiddenAddress`.

    Allowed: globally reachable unicast addresses by IANA's special-purpose registries
    (:mod:`downloaderApp.special_addresses`, the same on every Python), and any address inside
    one of ``allowed_networks``. Refused otherwise: loopback, link-local (cloud metadata
    169.254.169.254), RFC 1918, shared 100.64/10, 192.0.0.0/24, documentation, multicast,
    reserved, unspecified...
    """
    try:
        ip = _normalise(address)
    except ValueError:
        raise ForbiddenAddress(f"{address!r} is not an IP address") from None
    for network in allowed_networks:
        if ip.version == network.version and ip in network:
            return address
    if is_public(ip):
        return address
    where = f"host {host!r} resolves to " if host and host != address else ""
    block = block_of(ip)
    kind = f" ({block.name})" if block else ""
    raise ForbiddenAddress(
        f"{where}address {ip}{kind} which is not globally routable and not in allowed_networks"
    )


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` once with the system resolver; addresses in answer order, no duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise TransientDownloadError(
                f"temporary failure resolving {host!r}: {exc.strerror}"
            ) from None
        raise DownloadFailed(f"cannot resolve host {host!r}: {exc.strerror}") from None
    except UnicodeError:
        raise InvalidURL(f"invalid host name {host!r}") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def resolve_checked(
    target: Target, allowed_networks: Sequence[IPNetwork], resolver: Resolver = system_resolver
) -> list[str]:
    """Resolve the target host once and check every answer; return the checked addresses.

    If any answer is forbidden the whole host is refused: an attacker who controls DNS could
    otherwise mix a public and a private answer.
    """
    addresses = list(resolver(target.host, target.port))
    if not addresses:
        raise DownloadFailed(f"host {target.host!r} has no address")
    for address in addresses:
        check_address(address, allowed_networks, target.host)
    return addresses
