"""Configuration parsing: file, defaults, environment overrides, clear errors."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from kombu.transport import pyamqp

import downloaderApp
from downloaderApp import app, config
from downloaderApp.celery_app import celery_settings
from downloaderApp.config import Settings, load_settings
from downloaderApp.errors import ConfigError
from testenv import CONFIG_FILE, QUEUE


@pytest.fixture
def no_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.conf"))


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "downloader.conf"
    path.write_text(body, encoding="utf-8")
    return str(path)


def test_defaults_when_default_file_is_missing(no_default_file: None) -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.config_file is None
    assert settings.broker_url == "pyamqp://guest@localhost//"
    assert settings.result_backend == "rpc://"
    assert settings.download_dir == Path("/var/lib/downloader/files")
    assert settings.allowed_networks == ()
    assert settings.max_bytes == 104857600
    assert (settings.connect_timeout, settings.read_timeout) == (10, 30)
    assert (settings.max_redirects, settings.max_retries) == (5, 3)
    assert settings.list_timeout == 0.5


def test_default_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, "[downloader]\nmax_retries = 7\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", path)
    settings = load_settings({})
    assert settings.max_retries == 7
    assert settings.config_file == path


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match=r"nope\.conf named by DOWNLOADER_CONFIG does not exist"):
        load_settings({"DOWNLOADER_CONFIG": missing})


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
[downloader]
broker_url = pyamqp://app:p%40ss%word@rabbit1// ; pyamqp://app:p%40ss%word@rabbit2//
result_backend = rpc://
download_dir = /srv/files
allowed_networks = 10.0.0.0/8, 192.168.10.0/24 ,fd00::/8
max_bytes = 2048
connect_timeout = 1.5
read_timeout = 4
max_redirects = 0
max_retries = 0
list_timeout = 0.25
""",
    )
    settings = load_settings({"DOWNLOADER_CONFIG": path})
    assert settings.broker_url == (
        "pyamqp://app:p%40ss%word@rabbit1//;pyamqp://app:p%40ss%word@rabbit2//"
    )
    assert settings.download_dir == Path("/srv/files")
    assert settings.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.10.0/24"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert (settings.max_bytes, settings.connect_timeout, settings.read_timeout) == (2048, 1.5, 4)
    assert (settings.max_redirects, settings.max_retries, settings.list_timeout) == (0, 0, 0.25)
    assert settings.config_file == path


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[downloader]\nmax_bytes = 2048\ndownload_dir = /srv/a\n")
    settings = load_settings(
        {
            "DOWNLOADER_CONFIG": path,
            "DOWNLOADER_MAX_BYTES": "4096",
            "DOWNLOADER_ALLOWED_NETWORKS": "127.0.0.0/8",
            "DOWNLOADER_BROKER_URL": "pyamqp://other//",
        }
    )
    assert settings.max_bytes == 4096
    assert settings.download_dir == Path("/srv/a")
    assert settings.allowed_networks == (ipaddress.ip_network("127.0.0.0/8"),)
    assert settings.broker_url == "pyamqp://other//"


def test_environment_only(no_default_file: None) -> None:
    settings = load_settings({"DOWNLOADER_LIST_TIMEOUT": "0.2", "DOWNLOADER_ALLOWED_NETWORKS": ""})
    assert settings.list_timeout == 0.2
    assert settings.allowed_networks == ()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("max_bytes", "lots", "expected an integer"),
        ("max_bytes", "0", "must be >= 1"),
        ("max_bytes", "1.5", "expected an integer"),
        ("max_redirects", "-1", "must be >= 0"),
        ("max_retries", "three", "expected an integer"),
        ("allow_https_to_http_redirects", "maybe", "expected true or false"),
        ("connect_timeout", "0", "positive"),
        ("read_timeout", "soon", "number of seconds"),
        ("list_timeout", "nan", "positive, finite"),
        ("allowed_networks", "10.0.0.0/8, 300.1.0.0/16", "'300.1.0.0/16' is not a network"),
        ("allowed_networks", "10.0.0.0/33", "not a network"),
        ("download_dir", "relative/dir", "absolute path"),
        ("broker_url", "localhost", "not a URL"),
        ("broker_url", "pyamqp://a//;", "separated by ';'"),
        ("result_backend", "", "expected a URL"),
    ],
)
def test_bad_file_value_names_key_and_file(
    key: str, value: str, message: str, tmp_path: Path
) -> None:
    path = write(tmp_path, f"[downloader]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"DOWNLOADER_CONFIG": path})
    text = str(info.value)
    assert f"bad value for {key} = " in text
    assert path in text
    assert message in text


def test_bad_env_value_names_the_variable(no_default_file: None) -> None:
    with pytest.raises(ConfigError, match="max_bytes = 'x' in environment variable DOWNLOADER_MAX"):
        load_settings({"DOWNLOADER_MAX_BYTES": "x"})


def test_file_without_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[other]\nmax_bytes = 1\n")
    with pytest.raises(ConfigError, match=r"has no \[downloader\] section"):
        load_settings({"DOWNLOADER_CONFIG": path})


def test_file_that_is_not_ini(tmp_path: Path) -> None:
    path = write(tmp_path, "max_bytes = 1\n")
    with pytest.raises(ConfigError, match="not a valid INI file"):
        load_settings({"DOWNLOADER_CONFIG": path})


def test_unknown_key_is_reported_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "[downloader]\nmax_byte = 5\n")
    with caplog.at_level(logging.WARNING, logger="downloaderApp.config"):
        settings = load_settings({"DOWNLOADER_CONFIG": path})
    assert settings.max_bytes == Settings().max_bytes
    assert "unknown key 'max_byte'" in caplog.text


def test_celery_app_uses_the_test_configuration() -> None:
    conf = app.conf
    assert conf.task_default_queue == QUEUE
    assert conf.result_backend == "rpc://"
    settings = load_settings({"DOWNLOADER_CONFIG": str(CONFIG_FILE)})
    assert conf.broker_url == settings.broker_url


def test_fixed_celery_settings() -> None:
    fixed = celery_settings(Settings())
    expected = {
        "task_default_queue_type": "quorum",
        "broker_transport_options": {"confirm_publish": True},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_publish_retry": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "result_extended": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
    }
    for key, value in expected.items():
        assert fixed[key] == value, key
        assert app.conf[key] == value, key


def test_task_names_and_version() -> None:
    assert downloaderApp.download.name == "downloaderApp.download"
    assert downloaderApp.list.name == "downloaderApp.list"
    assert {"downloaderApp.download", "downloaderApp.list"} <= set(app.tasks)
    assert downloaderApp.__version__ == version("downloader-app") == "1.0.0"


def test_broker_ca_file_turns_on_verified_tls(no_default_file: None, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    settings = load_settings({"DOWNLOADER_BROKER_CA_FILE": str(ca)})
    assert settings.broker_ca_file == ca
    tls = celery_settings(settings)["broker_use_ssl"]
    assert tls == {"ca_certs": str(ca), "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    assert "broker_use_ssl" not in celery_settings(Settings())


@pytest.mark.parametrize(
    ("value", "message"),
    [("relative/ca.pem", "expected an absolute path"), ("/nonexistent/ca.pem", "no readable file")],
)
def test_bad_broker_ca_file_is_a_clear_error(
    no_default_file: None, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"DOWNLOADER_BROKER_CA_FILE: {message}"):
        load_settings({"DOWNLOADER_BROKER_CA_FILE": value})


def test_every_connection_verifies_the_host_it_dials(
    no_default_file: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kombu writes the host of the URL in use into the TLS settings it is given; those are
    shared by every connection of the app, so a failover to another broker would then check
    the first broker's name. Each attempt must fill in a copy: the shared settings keep None,
    and each broker of the list is checked against its own name."""
    dialled: list[tuple[str, str]] = []

    def refuse(**opts: Any) -> None:  # stands in for amqp.Connection: records, then fails
        dialled.append((opts["host"], opts["ssl"]["server_hostname"]))
        raise ConnectionRefusedError(opts["host"])

    monkeypatch.setattr(pyamqp.Transport, "Connection", staticmethod(refuse))
    tls = {"ca_certs": "/ca.pem", "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    urls = "pyamqp://u:p@broker-a:5671//;pyamqp://u:p@broker-b:5671//"
    conn = app.connection_for_write(url=urls, ssl=tls)
    # A connection of the app's own, then one from a kombu pool (as tasks are published).
    for candidate in (conn, conn.Pool(limit=1).acquire()):
        dialled.clear()
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                candidate.transport.establish_connection()
            candidate.maybe_switch_next()
        assert [server_name for _, server_name in dialled] == ["broker-a", "broker-b", "broker-a"]
        assert [address.split(":")[0] for address, _ in dialled] == [
            "broker-a",
            "broker-b",
            "broker-a",
        ]
        assert tls["server_hostname"] is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("broker_url", "pyamqp://downloader:S3cret%25pw@broker1:5671//;nonsense"),
        ("broker_url", "pyamqp://downloader:S3cret%25pw@broker1:5671//;"),
        ("result_backend", "redis:/:S3cret%25pw@cache:6379/0"),
    ],
)
def test_a_bad_url_value_is_shown_without_its_password(
    key: str, value: str, tmp_path: Path
) -> None:
    path = write(tmp_path, f"[downloader]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings({"DOWNLOADER_CONFIG": path})
    text = str(info.value)
    assert "S3cret" not in text
    assert f"bad value for {key} = " in text


def test_passwords_of_every_url_in_a_text_are_masked() -> None:
    text = (
        "pyamqp://u:p%40ss@b1:5671//;pyamqp://u:pw2@b2//, redis://:tok@r:6379/0 and http://h/a:b@c"
    )
    assert config.mask_url_passwords(text) == (
        "pyamqp://u:***@b1:5671//;pyamqp://u:***@b2//, redis://:***@r:6379/0 and http://h/a:b@c"
    )
