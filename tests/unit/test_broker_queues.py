"""remove-broker.yml's and move-brokers.yml's filters (playbooks/filter_plugins/broker_queues.py):
which queues of a node would take their messages with it, which queues of a cluster still hold
messages, and which clients still use it."""

from __future__ import annotations

import json
from typing import Any

from file_module import load

plugin = load("playbooks/filter_plugins/broker_queues.py")


def listing(vhost: str, *queues: dict[str, Any]) -> dict[str, Any]:
    """A loop result as Ansible registers it, with list_queues' JSON as RabbitMQ 4.0.5 prints it
    (`exclusive` an empty string for a queue of no connection)."""
    rows = [{"type": "classic", "messages": 0, "exclusive": "", "auto_delete": False, **q} for q in queues]
    return {"item": vhost, "stdout": "[\n" + "\n,".join(json.dumps(r) for r in rows) + "\n]", "rc": 0}


# Both filters read the same listings: queues of every type, with and without messages, of a
# connection and of none, one whose member is down (messages "").
LISTINGS = [
    listing(
        "downloader",
        {"name": "celery", "type": "quorum", "messages": 20},
        {"name": "celery_delayed_3", "type": "quorum", "messages": 0},
        {"name": "leftover", "messages": 3},
        {"name": "empty"},
        {"name": "celeryev.0b1c", "messages": 5, "auto_delete": True},
        {"name": "amq.gen-x", "messages": 1, "exclusive": True},
        {"name": "logs", "type": "stream", "messages": 9},
        {"name": "down", "type": "quorum", "messages": ""},
    ),
    listing("/", {"name": "reports", "messages": 1}),
]


def test_only_classic_queues_of_no_connection_with_messages() -> None:
    assert plugin.stranded_classic_queues(LISTINGS) == [
        "leftover (vhost downloader): 3 messages",
        "reports (vhost /): 1 messages",
    ]


def test_a_vhost_without_queues_and_a_queue_that_is_down() -> None:
    empty = {"item": "other", "stdout": "[\n]"}
    down = listing("downloader", {"name": "leftover", "messages": ""})
    assert plugin.stranded_classic_queues([empty, down]) == []


def test_every_type_of_queue_with_messages_for_a_move() -> None:
    assert plugin.queues_with_messages(LISTINGS) == [
        "celery (vhost downloader): 20 messages",
        "leftover (vhost downloader): 3 messages",
        "logs (vhost downloader): 9 messages",
        "reports (vhost /): 1 messages",
    ]


def test_connections_of_hosts_other_than_the_allowed_ones() -> None:
    # `list_connections user peer_host --formatter json`: RabbitMQ 3.10.8 and 4.0.5 print an
    # address as Erlang's tuple; text is taken too.
    conns = [
        {"user": "downloader", "peer_host": [172, 30, 236, 22]},
        {"user": "downloader", "peer_host": "172.30.236.22"},
        {"user": "downloader-client", "peer_host": [172, 30, 236, 51]},
        {"user": "downloader-client", "peer_host": "172.30.236.51"},
        {"user": "downloader-flower", "peer_host": "198.51.100.7"},
        {"user": "downloader-flower", "peer_host": [0x2001, 0xDB8, 0, 0, 0, 0, 0, 7]},
    ]
    text = "[\n" + "\n,".join(json.dumps(c) for c in conns) + "\n]"
    assert plugin.connections_from_others(text, ["172.30.236.22"]) == [
        "downloader-client from 172.30.236.51",
        "downloader-flower from 198.51.100.7",
        "downloader-flower from 2001:db8::7",
    ]
    everyone = ["172.30.236.22", "172.30.236.51", "198.51.100.7", "2001:db8::7"]
    assert plugin.connections_from_others(text, everyone) == []
    assert plugin.connections_from_others("", []) == []
