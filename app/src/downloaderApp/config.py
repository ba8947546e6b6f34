"""Configuration: an INI file (section ``[downloader]``) plus ``DOWNLOADER_<KEY>`` overrides.

The file is the one named by ``DOWNLOADER_CONFIG`` (default ``/etc/downloader/downloader.conf``).
A missing default file is fine (built-in defaults apply); a missing file named explicitly by
``DOWNLOADER_CONFIG`` is an error. A file this user may not read, or one in a directory this user
may not search (so whether it exists cannot be told), raises :class:`ConfigUnreadable`, never the
defaults. Every bad value raises :class:`ConfigError` naming the key and where the value came from.
"""

from __future__ import annotations

import configparser
import functools
import grp
import ipaddress
import logging
import math
import os
import pwd
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from downloaderApp.errors import ConfigError, ConfigUnreadable

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_CONFIG",
    "SECTION",
    "IPNetwork",
    "Settings",
    "get_settings",
    "load_settings",
    "mask_url_passwords",
]

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "/etc/downloader/downloader.conf"
ENV_CONFIG = "DOWNLOADER_CONFIG"
ENV_PREFIX = "DOWNLOADER_"
SECTION = "downloader"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Field names are the keys of the ``[downloader]`` section."""

    broker_url: str = "pyamqp://guest@localhost//"
    result_backend: str = "rpc://"
    download_dir: Path = Path("/var/lib/downloader/files")
    allowed_networks: tuple[IPNetwork, ...] = ()
    max_bytes: int = 104857600
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_redirects: int = 5
    max_retries: int = 3
    # Seconds one download may take from its first connection to its last byte, redirects
    # included, on every pool (the thread pool ignores Celery's time limits): below the worker's
    # --soft-time-limit (240 s) and stop timeout (330 s) of the celery_worker role.
    download_deadline: float = 230.0
    # A redirect from https to http is refused (the rest of the download would travel in clear
    # text, open to tampering) unless this is true.
    allow_https_to_http_redirects: bool = False
    list_timeout: float = 0.5
    # Files list() returns at most (the first by name), and a page of `downloader list`: the
    # replies stay far below RabbitMQ's message size limit whatever a worker's directory holds.
    list_limit: int = 1000
    # Extra keys (not in the tutorial's contract; the defaults are what the contract implies).
    retry_backoff: float = 2.0
    queue: str = "celery"
    # TLS to the broker: the CA file that the brokers' certificates must chain to. Set, every
    # broker connection is TLS with the certificate and the broker's host name verified.
    broker_ca_file: Path | None = None
    # What this host's broker user may do. A worker's user creates the task queue and its
    # exchange; a user that may only publish to them (Flower's, a client's) checks that the
    # queue exists instead (a passive declare) and creates nothing.
    declare_queues: bool = True
    # Send a task-sent event for each task sent from here (Flower shows the task from then on,
    # not only once a worker received it); needs rights on the events exchange.
    send_sent_events: bool = True
    # Where the values came from: the file read, or None when only defaults/env were used.
    config_file: str | None = field(default=None, compare=False)


# The password of a URL's userinfo (scheme://user:password@host), wherever URLs sit in a text.
# Also in a malformed one (scheme:/user:password@host), which is what an error message shows.
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*:/*[^\s:/@;'\"]*:)[^\s@;'\"]*(@)")


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``, for messages and logs."""
    return _URL_PASSWORD.sub(r"\1***\2", text)


def _parse_broker_url(raw: str) -> str:
    parts = [part.strip() for part in raw.split(";")]
    if not raw.strip() or any(not part for part in parts):
        raise ValueError("expected one URL or several URLs separated by ';'")
    for part in parts:
        if "://" not in part:
            raise ValueError(f"{part!r} is not a URL (no scheme://)")
    return ";".join(parts)


def _parse_backend(raw: str) -> str:
    value = raw.strip()
    if "://" not in value:
        raise ValueError("expected a URL such as rpc://")
    return value


def _parse_dir(raw: str) -> Path:
    value = raw.strip()
    if not value:
        raise ValueError("expected a directory path")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError("expected an absolute path")
    return path


def _parse_ca_file(raw: str) -> Path | None:
    value = raw.strip()
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        raise ValueError("expected an absolute path")
    if not os.access(path, os.R_OK) or not path.is_file():
        raise ValueError("no readable file at that path")
    return path


def _parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for item in raw.split(","):
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a network in CIDR notation ({exc})") from None
    return tuple(networks)


def _int_parser(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected an integer") from None
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive, finite number of seconds")
    return value


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError("expected true or false")


def _parse_queue(raw: str) -> str:
    value = raw.strip()
    if not value or any(ch.isspace() for ch in value) or len(value) > 200:
        raise ValueError("expected a queue name without whitespace")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "broker_url": _parse_broker_url,
    "result_backend": _parse_backend,
    "download_dir": _parse_dir,
    "allowed_networks": _parse_networks,
    "max_bytes": _int_parser(1),
    "connect_timeout": _seconds,
    "read_timeout": _seconds,
    "max_redirects": _int_parser(0),
    "max_retries": _int_parser(0),
    "download_deadline": _seconds,
    "allow_https_to_http_redirects": _parse_bool,
    "list_timeout": _seconds,
    "list_limit": _int_parser(1),
    "retry_backoff": _seconds,
    "queue": _parse_queue,
    "broker_ca_file": _parse_ca_file,
    "declare_queues": _parse_bool,
    "send_sent_events": _parse_bool,
}
KEYS: tuple[str, ...] = tuple(_PARSERS)
assert set(KEYS) == {f.name for f in fields(Settings)} - {"config_file"}


def env_var(key: str) -> str:
    """The environment variable that overrides ``key``."""
    return ENV_PREFIX + key.upper()


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _unreadable(path: str, denied: str) -> ConfigUnreadable:
    """The error for the configuration file ``path`` that this user may not read because of
    ``denied``: the file itself, or a directory on its way that this user may not search."""
    what = "the file" if denied == path else f"directory {denied}"
    group = ""
    try:
        info = os.stat(denied)
    except OSError:  # pragma: no cover - it was there a moment ago
        detail, advice = f"on {what}", "the group that owns it"
    else:
        group = _group_name(info.st_gid)
        owner = f"{_user_name(info.st_uid)}:{group}"
        detail = f"{what} is {owner} mode {stat.S_IMODE(info.st_mode):04o}"
        advice = f"group {group}"
    return ConfigUnreadable(
        f"cannot read configuration file {path}: permission denied for user "
        f"{_user_name(os.geteuid())} ({detail}); run as root or as a member of "
        f"{advice}. The built-in defaults are not used in its place.",
        path,
        group,
    )


def _blocking_directory(path: str) -> str:
    """The directory on the way to ``path`` that this user may not search (an entry of which
    cannot be looked up); the file's own directory when none is found (a race)."""
    target = Path(os.path.abspath(path))
    for candidate in [*reversed(target.parents), target][1:]:
        try:
            os.stat(candidate)
        except PermissionError:
            return str(candidate.parent)
        except OSError:
            break
    return str(target.parent)


def _file_exists(path: str) -> bool:
    """Whether the configuration file exists. ``os.path.exists`` would say False when a
    directory on its way may not be searched: that is :class:`ConfigUnreadable` instead."""
    try:
        os.stat(path)
    except PermissionError:
        raise _unreadable(path, _blocking_directory(path)) from None
    except OSError:  # missing, or a non-directory on its way
        return False
    return True


def _read_file(path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)  # '%' is common in broker passwords
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except PermissionError:
        raise _unreadable(path, path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} is not a valid INI file: {exc}") from None
    if not parser.has_section(SECTION):
        raise ConfigError(f"configuration file {path} has no [{SECTION}] section")
    values = {key: parser.get(SECTION, key) for key in parser.options(SECTION)}
    for key in sorted(set(values) - set(KEYS)):
        log.warning("configuration file %s: unknown key %r in [%s] ignored", path, key, SECTION)
        del values[key]
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the configuration file and the environment into a :class:`Settings`."""
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_CONFIG, "")
    path = explicit or DEFAULT_CONFIG_PATH
    file_values: dict[str, str] = {}
    config_file: str | None = None
    if _file_exists(path):
        file_values = _read_file(path)
        config_file = path
    elif explicit:
        raise ConfigError(f"configuration file {explicit} named by {ENV_CONFIG} does not exist")

    values: dict[str, Any] = {}
    for key, parse in _PARSERS.items():
        name = env_var(key)
        if name in env:
            raw, origin = env[name], f"environment variable {name}"
        elif key in file_values:
            raw, origin = file_values[key], f"[{SECTION}] of {path}"
        else:
            continue
        try:
            values[key] = parse(raw)
        except ValueError as exc:
            message = f"bad value for {key} = {raw!r} in {origin}: {exc}"
            raise ConfigError(mask_url_passwords(message)) from None
    return Settings(config_file=config_file, **values)


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once (``get_settings.cache_clear()`` reloads)."""
    return load_settings()
