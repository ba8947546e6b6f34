"""Filters of backup.yml and move-brokers.yml: the brokers' exported definitions as an import
into a cluster can take them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _kept(entry: Mapping[str, Any]) -> bool:
    return bool(entry.get("durable")) and not entry.get("auto_delete")


def restorable_definitions(definitions: Mapping[str, Any]) -> dict[str, Any]:
    """DEFINITIONS (`rabbitmqctl export_definitions`) without what belongs to a connection: the
    queues and exchanges that are not durable or delete themselves (each client's event,
    remote-control and reply queues, declared again by the client when it connects), and every
    binding with an end that is neither kept nor a broker's own exchange (the default one,
    amq.*). An export names bindings of exclusive queues that it leaves out itself, and
    `rabbitmqctl import_definitions` refuses a whole file for one such binding."""
    queues = [q for q in definitions.get("queues") or [] if _kept(q)]
    exchanges = [e for e in definitions.get("exchanges") or [] if _kept(e)]
    kept = {("queue", q["vhost"], q["name"]) for q in queues}
    kept |= {("exchange", e["vhost"], e["name"]) for e in exchanges}

    def known(kind: str, vhost: str, name: str) -> bool:
        return (kind, vhost, name) in kept or (kind == "exchange" and (name == "" or name.startswith("amq.")))

    bindings = [
        b
        for b in definitions.get("bindings") or []
        if known("exchange", b["vhost"], b["source"])
        and known(b["destination_type"], b["vhost"], b["destination"])
    ]
    return {**definitions, "queues": queues, "exchanges": exchanges, "bindings": bindings}


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"restorable_definitions": restorable_definitions}
