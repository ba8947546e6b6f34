"""Filters of remove-broker.yml and move-brokers.yml: the messages and clients that a node or a
cluster still holds."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any


def _held(listings: Iterable[Mapping[str, Any]], classic_only: bool) -> list[str]:
    """ "NAME (vhost VHOST): N messages" for each queue that holds messages and belongs to no
    connection (neither exclusive nor auto-delete: those end with their connection), from
    LISTINGS: the results of a loop over the vhosts (`item`) of `rabbitmqctl list_queues -p
    VHOST name type messages exclusive auto_delete --formatter json` (`stdout`)."""
    found = []
    for listing in listings:
        for queue in json.loads(listing.get("stdout") or "[]"):
            messages = queue.get("messages")
            held = messages if isinstance(messages, int) else 0
            if (
                (queue.get("type") == "classic" or not classic_only)
                and held > 0
                and not queue.get("exclusive")
                and not queue.get("auto_delete")
            ):
                found.append(f"{queue['name']} (vhost {listing['item']}): {held} messages")
    return found


def stranded_classic_queues(listings: Iterable[Mapping[str, Any]]) -> list[str]:
    """The classic queues of LISTINGS (read with --local on one node) that hold messages:
    classic queues have no replica on another node."""
    return _held(listings, classic_only=True)


def queues_with_messages(listings: Iterable[Mapping[str, Any]]) -> list[str]:
    """The queues of LISTINGS, of any type, that hold messages (ready or unacknowledged)."""
    return _held(listings, classic_only=False)


def _address(peer: Any) -> str:
    """A peer's address as text: RabbitMQ's JSON (3.10.8 and 4.0.5 alike) gives Erlang's tuple,
    [172, 30, 238, 22] (eight 16-bit numbers for IPv6)."""
    if isinstance(peer, list) and len(peer) == 4:
        return str(ipaddress.IPv4Address(bytes(peer)))
    if isinstance(peer, list) and len(peer) == 8:
        return str(ipaddress.IPv6Address(b"".join(n.to_bytes(2, "big") for n in peer)))
    return str(peer)


def connections_from_others(listing: str, allowed: Iterable[str]) -> list[str]:
    """ "USER from ADDRESS" for each connection of LISTING (`rabbitmqctl list_connections user
    peer_host --formatter json`) whose peer is not one of the ALLOWED addresses."""
    keep = set(allowed)
    peers = ((conn.get("user", "?"), _address(conn.get("peer_host"))) for conn in json.loads(listing or "[]"))
    return sorted({f"{user} from {address}" for user, address in peers if address not in keep})


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "stranded_classic_queues": stranded_classic_queues,
            "queues_with_messages": queues_with_messages,
            "connections_from_others": connections_from_others,
        }
