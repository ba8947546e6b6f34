"""Who reaches which port: the firewall's allow-lists, the brokers' logins and vhosts, and plain
AMQP turned off."""

from __future__ import annotations

import socket
import ssl

from celerylab import (
    AMQP_PORT,
    BROKERS,
    FLOWER_PORT,
    FLOWERS,
    MANAGEMENT_PORT,
    PKI,
    PLAIN_AMQP_PORT,
    WEB,
    WORKERS,
    address_of,
    amqp_login,
    app_password,
    connections,
    host,
)


def test_flower_port_is_closed_to_hosts_outside_the_allowed_sources() -> None:
    outsiders = [*WORKERS[1:], *BROKERS, WEB]
    outcome = connections((src, FLOWERS[0], FLOWER_PORT) for src in [WORKERS[0], *outsiders])
    assert outcome[(WORKERS[0], FLOWERS[0], FLOWER_PORT)] == "open"  # the allowed one
    for outsider in outsiders:
        assert outcome[(outsider, FLOWERS[0], FLOWER_PORT)] != "open", f"{outsider} reached Flower"


def test_broker_ports_are_closed_to_hosts_outside_their_sources() -> None:
    broker = BROKERS[0]
    others = [*WORKERS, *FLOWERS, WEB]
    inter_node = (4369, 25672)  # Erlang's port mapper and the inter-node port
    outcome = connections(
        [
            (WORKERS[0], broker, AMQP_PORT),
            (WEB, broker, AMQP_PORT),
            *((src, broker, port) for port in inter_node for src in [*others, *BROKERS[1:]]),
            *((other, broker, MANAGEMENT_PORT) for other in others),
        ]
    )
    assert outcome[(WORKERS[0], broker, AMQP_PORT)] == "open"
    # The zone drops what it does not name: no answer at all, not even a refusal.
    assert outcome[(WEB, broker, AMQP_PORT)].startswith("TimeoutError"), "AMQP answered an outsider"
    # The inter-node ports: to the other brokers only.
    for port in inter_node:
        for other in others:
            assert outcome[(other, broker, port)] != "open", f"{other} reached port {port}"
        for peer in BROKERS[1:]:
            assert outcome[(peer, broker, port)] == "open", f"broker {peer} cannot reach port {port}"
    # No admin sources in this scenario: the management port answers no other host.
    for other in others:
        assert outcome[(other, broker, MANAGEMENT_PORT)] != "open", f"{other} reached management"


def test_a_client_source_outside_the_inventory_reaches_amqp() -> None:
    """The controller stands for a client that the inventory does not manage: its address is in
    celery_client_sources, so every broker lets it open AMQP over TLS (the broker's certificate
    and host name verified against the cluster's CA) and answers the AMQP protocol header with
    connection.start (a frame of type 1 on channel 0)."""
    context = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    for broker in BROKERS:
        address = address_of(broker)
        with (
            socket.create_connection((address, AMQP_PORT), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=broker) as tls,
        ):
            tls.sendall(b"AMQP\x00\x00\x09\x01")
            frame = tls.recv(7)
        assert frame[:3] == b"\x01\x00\x00", f"{broker} answered {frame!r}"


def test_guest_cannot_log_in_from_another_host() -> None:
    assert amqp_login(WORKERS[0], "guest", "guest").startswith("refused")


def test_app_user_is_refused_on_any_other_vhost() -> None:
    """The app's user has rights on its own vhost only: the same credentials that open the
    app's vhost are refused on the broker's default vhost "/"."""
    assert amqp_login(WORKERS[0], "downloader", app_password()) == "open"
    assert amqp_login(WORKERS[0], "downloader", app_password(), vhost="/").startswith("refused")


def test_plain_amqp_is_off_and_its_port_closed() -> None:
    """With TLS on, no broker listens on 5672 (nor on the plain management port), and the
    firewall drops 5672 for every other host: the app's login over plain AMQP gets nowhere."""
    for broker in BROKERS:
        assert not host(broker).socket(f"tcp://0.0.0.0:{PLAIN_AMQP_PORT}").is_listening
        assert not host(broker).socket("tcp://0.0.0.0:15672").is_listening  # plain HTTP
    login = amqp_login(WORKERS[0], "downloader", app_password(), port=PLAIN_AMQP_PORT, cafile="")
    assert login.startswith("error"), login
    attempts = connections((other, BROKERS[0], PLAIN_AMQP_PORT) for other in [*WORKERS, *FLOWERS])
    for (other, _, _), reached in attempts.items():
        assert reached != "open", f"{other} reached 5672"
