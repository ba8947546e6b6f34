"""remove-broker.yml's filter (playbooks/filter_plugins/broker_queues.py): which queues of a
node would take their messages with it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

PLUGIN = Path(__file__).parents[2] / "playbooks/filter_plugins/broker_queues.py"
spec = importlib.util.spec_from_file_location("broker_queues", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)


def listing(vhost: str, *queues: dict[str, Any]) -> dict[str, Any]:
    """A loop result as Ansible registers it, with list_queues' JSON as RabbitMQ 4.0.5 prints it
    (`exclusive` an empty string for a queue of no connection)."""
    rows = [{"type": "classic", "messages": 0, "exclusive": "", "auto_delete": False, **q} for q in queues]
    return {"item": vhost, "stdout": "[\n" + "\n,".join(json.dumps(r) for r in rows) + "\n]", "rc": 0}


def test_only_classic_queues_of_no_connection_with_messages() -> None:
    listings = [
        listing(
            "downloader",
            {"name": "celery", "type": "quorum", "messages": 20},
            {"name": "celery_delayed_3", "type": "quorum", "messages": 0},
            {"name": "leftover", "messages": 3},
            {"name": "empty"},
            {"name": "celeryev.0b1c", "messages": 5, "auto_delete": True},
            {"name": "amq.gen-x", "messages": 1, "exclusive": True},
            {"name": "logs", "type": "stream", "messages": 9},
        ),
        listing("/", {"name": "reports", "messages": 1}),
    ]
    assert plugin.stranded_classic_queues(listings) == [
        "leftover (vhost downloader): 3 messages",
        "reports (vhost /): 1 messages",
    ]


def test_a_vhost_without_queues_and_a_queue_that_is_down() -> None:
    empty = {"item": "other", "stdout": "[\n]"}
    down = listing("downloader", {"name": "leftover", "messages": ""})
    assert plugin.stranded_classic_queues([empty, down]) == []
