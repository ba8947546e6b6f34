"""backup.yml's filter (playbooks/filter_plugins/broker_definitions.py): the definitions a
restore can import."""

from __future__ import annotations

from file_module import load

plugin = load("playbooks/filter_plugins/broker_definitions.py")


def queue(name: str, durable: bool = True, auto_delete: bool = False) -> dict[str, object]:
    return {
        "name": name,
        "vhost": "downloader",
        "durable": durable,
        "auto_delete": auto_delete,
        "arguments": {},
    }


def binding(source: str, destination: str, kind: str = "queue") -> dict[str, object]:
    return {"source": source, "vhost": "downloader", "destination": destination, "destination_type": kind,
            "routing_key": destination, "arguments": {}}  # fmt: skip


# As RabbitMQ 4.0 exported a converged cluster's vhost: the exclusive event queue of Flower
# (left out of the export) is still named by a binding.
EXPORT = {
    "users": [{"name": "downloader"}],
    "vhosts": [{"name": "downloader"}, {"name": "ops-extra"}],
    "policies": [{"name": "celery-delivery-limit", "vhost": "downloader"}],
    "queues": [
        queue("celery"),
        queue("worker1@worker1.celery.pidbox", durable=False, auto_delete=True),
        queue("1b2c-reply", durable=False, auto_delete=True),
    ],
    "exchanges": [
        {"name": "celery", "vhost": "downloader", "type": "topic", "durable": True, "auto_delete": False},
        {"name": "celeryev", "vhost": "downloader", "type": "topic", "durable": True, "auto_delete": False},
        {
            "name": "reply.celery.pidbox",
            "vhost": "downloader",
            "type": "direct",
            "durable": False,
            "auto_delete": True,
        },
    ],
    "bindings": [
        binding("celery", "celery"),
        binding("celeryev", "celeryev.14d32a42"),
        binding("celery.pidbox", "worker1@worker1.celery.pidbox"),
        binding("amq.topic", "celery"),
        binding("celery", "celeryev", "exchange"),
    ],
}


def test_only_durable_objects_and_bindings_between_them_are_kept() -> None:
    restorable = plugin.restorable_definitions(EXPORT)
    assert [q["name"] for q in restorable["queues"]] == ["celery"]
    assert [e["name"] for e in restorable["exchanges"]] == ["celery", "celeryev"]
    assert [(b["source"], b["destination"]) for b in restorable["bindings"]] == [
        ("celery", "celery"),
        ("amq.topic", "celery"),
        ("celery", "celeryev"),
    ]


def test_everything_else_is_kept_as_exported() -> None:
    restorable = plugin.restorable_definitions(EXPORT)
    for key in ("users", "vhosts", "policies"):
        assert restorable[key] == EXPORT[key]
    assert plugin.restorable_definitions({}) == {"queues": [], "exchanges": [], "bindings": []}
