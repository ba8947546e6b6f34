"""Filters of remove-worker.yml: which task queues would be left without a consumer once the
limited worker hosts are drained."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _served(host_queues: Sequence[str] | None, app_queues: Sequence[str]) -> set[str]:
    """The queues a worker host consumes: its celery_worker_queues, else every queue of its app."""
    return set(host_queues or app_queues)


def drain_unserved_queues(
    workers: Iterable[Sequence[Any]], drained: Iterable[str], apps: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """WORKERS: [host, app id, celery_worker_queues] of every worker host; DRAINED: the hosts to
    drain; APPS: the cluster role's cluster_apps_resolved (each entry with its queues). For
    each queue that some drained host consumes and no other worker host of the same app does:
    {app, queue, hosts (the drained hosts that consume it)}, sorted by app and queue."""
    app_queues = {app["id"]: list(app["queues"]) for app in apps}
    drained = set(drained)
    leaving: dict[tuple[str, str], list[str]] = {}
    staying: set[tuple[str, str]] = set()
    for host, app, queues in workers:
        for queue in _served(queues, app_queues.get(app, [])):
            if host in drained:
                leaving.setdefault((app, queue), []).append(host)
            else:
                staying.add((app, queue))
    return [
        {"app": app, "queue": queue, "hosts": sorted(hosts)}
        for (app, queue), hosts in sorted(leaving.items())
        if (app, queue) not in staying
    ]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"drain_unserved_queues": drain_unserved_queues}
