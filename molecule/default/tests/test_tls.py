"""TLS everywhere: the brokers, Flower and the brokers' Erlang distribution accept the cluster's
CA only."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from celerylab import (
    BROKERS,
    FLOWER_PORT,
    FLOWER_URL,
    FLOWERS,
    HTTP,
    PKI,
    WORKERS,
    amqp_login,
    app_password,
    erlang_ping,
    host,
    http,
    probe,
    put_file,
)

# A CA of nobody's, and a client certificate it signed (probes/rogue_pki.sh), on a test host.
ROGUE = "/tmp/rogue-pki"


@pytest.fixture(scope="module")
def rogue_pki() -> Iterator[list[str]]:
    """The rogue CA and its client certificate in ROGUE on a worker host and on the last
    broker (the hosts that attempt connections with them); removed after the module."""
    hosts = [WORKERS[0], BROKERS[-1]]
    try:
        for name in hosts:
            made = host(name).run("sh -c %s rogue_pki %s", probe("rogue_pki.sh"), ROGUE)
            assert made.rc == 0, f"on {name}: {made.stderr}"
        yield hosts
    finally:
        for name in hosts:
            host(name).run("rm -rf %s", ROGUE)


def test_tls_refuses_certificates_from_another_ca(rogue_pki: list[str]) -> None:
    """A client that trusts another CA refuses the broker's certificate; a client showing a
    certificate that another CA signed is refused by the broker, while one that the cluster's
    CA signed (the worker host's own, from the controller) gets in."""
    src = WORKERS[0]
    user, password = "downloader", app_password()
    assert amqp_login(src, user, password) == "open"
    wrong_trust = amqp_login(src, user, password, cafile=f"{ROGUE}/ca.crt")
    assert wrong_trust.startswith("tls-error") and "CERTIFICATE_VERIFY_FAILED" in wrong_trust
    rogue = (f"{ROGUE}/client.crt", f"{ROGUE}/client.key")
    assert amqp_login(src, user, password, client_cert=rogue).startswith("tls-error")
    for name in (f"{src}.crt", f"{src}.key"):
        put_file(src, f"{ROGUE}/own-{name}", (PKI / name).read_bytes())
    own = (f"{ROGUE}/own-{src}.crt", f"{ROGUE}/own-{src}.key")
    assert amqp_login(src, user, password, client_cert=own) == "open"


def test_flower_serves_https_only_with_a_certificate_of_the_cluster(rogue_pki: list[str]) -> None:
    status, _ = http(WORKERS[0], "GET", f"{FLOWER_URL}/healthcheck")
    assert status == 200
    refused = host(WORKERS[0]).run(
        "python3 -c %s GET %s '' '' %s", HTTP, f"{FLOWER_URL}/healthcheck", f"{ROGUE}/ca.crt"
    )
    assert refused.rc != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    plain = host(WORKERS[0]).run(
        "python3 -c %s GET %s '' '' ''", HTTP, f"http://{FLOWERS[0]}:{FLOWER_PORT}/healthcheck"
    )
    assert plain.rc != 0 or not plain.stdout.startswith("200"), plain.stdout


# TLS settings for a probe that trusts the cluster's CA but shows the rogue CA's certificate.
ROGUE_DIST = f"""[{{server, [{{certfile, "{ROGUE}/client.crt"}}, {{keyfile, "{ROGUE}/client.key"}}]}},
 {{client, [{{certfile, "{ROGUE}/client.crt"}}, {{keyfile, "{ROGUE}/client.key"}},
            {{cacertfile, "/etc/rabbitmq/tls/ca.crt"}}, {{verify, verify_peer}}]}}]."""


def test_the_brokers_erlang_distribution_speaks_tls_only(rogue_pki: list[str]) -> None:
    """The Erlang cookie alone no longer opens a node: an Erlang node that knows the cookie
    gets no answer (pang) over plain TCP, nor over TLS with a certificate of another CA; with
    the broker's own distribution settings (its certificate from the cluster's CA), pong."""
    src = BROKERS[-1]
    env = host(src).file("/etc/rabbitmq/rabbitmq-env.conf").content_string
    match = re.search(r'^CTL_ERL_ARGS="(.+)"$', env, re.M)
    assert match, f"no TLS distribution settings in {src}'s rabbitmq-env.conf:\n{env}"
    own_tls = match.group(1)
    written = host(src).run("printf '%%s\n' %s > %s/dist.config", ROGUE_DIST, ROGUE)
    assert written.rc == 0, written.stderr
    rogue_tls = f"-proto_dist inet_tls -ssl_dist_optfile {ROGUE}/dist.config"
    for dst in BROKERS:
        assert erlang_ping(src, dst, "") == "pang", f"{src} reached {dst} over plain TCP"
        assert erlang_ping(src, dst, rogue_tls) == "pang", f"{src} reached {dst} with a rogue certificate"
        assert erlang_ping(src, dst, own_tls) == "pong", f"{src} cannot reach {dst} over TLS"
