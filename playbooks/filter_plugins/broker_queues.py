"""Filters of remove-broker.yml: the queues whose messages would leave with a node."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def stranded_classic_queues(listings: Iterable[Mapping[str, Any]]) -> list[str]:
    """ "NAME (vhost VHOST): N messages" for each classic queue that holds messages and belongs to no
    connection (neither exclusive nor auto-delete), from LISTINGS: the results of a loop over
    the vhosts (`item`) of `rabbitmqctl list_queues --local -p VHOST name type messages
    exclusive auto_delete --formatter json` (`stdout`). Classic queues have no replica on
    another node; a connection's own queues end with it when the node is drained."""
    found = []
    for listing in listings:
        for queue in json.loads(listing.get("stdout") or "[]"):
            messages = queue.get("messages")
            held = messages if isinstance(messages, int) else 0
            if (
                queue.get("type") == "classic"
                and held > 0
                and not queue.get("exclusive")
                and not queue.get("auto_delete")
            ):
                found.append(f"{queue['name']} (vhost {listing['item']}): {held} messages")
    return found


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"stranded_classic_queues": stranded_classic_queues}
