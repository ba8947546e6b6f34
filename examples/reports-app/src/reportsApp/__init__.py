"""reportsApp: the second example app of the cluster, an app of the operator's own.

It knows nothing of the cluster: the cluster's settings (brokers, TLS, queues, delivery) come
from the configuration module that the celery_app role renders on each host and names by
CELERY_CONFIG_MODULE. The app only routes its tasks: word counts to the queue reports.fast,
summaries to reports.slow, each served by the worker hosts that the inventory gives it. Its
periodic task, tick, runs as often as the inventory's beat_schedule says (the cluster runs one
scheduler for the app, README "Periodic tasks").

    from reportsApp import count_words, summarize
    count_words.delay("a b c").get(timeout=30)        # 3
    summarize.delay([3, 1, 2]).get(timeout=30)         # {"count": 3, "total": 6, ...}
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

app = Celery("reportsApp")
# The cluster's settings; a host without CELERY_CONFIG_MODULE fails here, clearly, instead of
# running against Celery's defaults (a broker on localhost).
app.config_from_envvar("CELERY_CONFIG_MODULE")
app.conf.task_routes = {
    "reportsApp.count_words": {"queue": "reports.fast"},
    "reportsApp.summarize": {"queue": "reports.slow"},
    "reportsApp.tick": {"queue": "reports.fast"},
}


@app.task(name="reportsApp.count_words")
def count_words(text: str) -> int:
    """The number of words of TEXT."""
    return len(text.split())


@app.task(name="reportsApp.summarize")
def summarize(values: list[float]) -> dict[str, Any]:
    """Count, total, smallest and largest of VALUES (None for an empty list)."""
    return {
        "count": len(values),
        "total": sum(values),
        "min": min(values, default=None),
        "max": max(values, default=None),
    }


@app.task(name="reportsApp.tick")
def tick() -> float:
    """The periodic task: the time it ran (seconds since the epoch), in the worker's log."""
    return time.time()


__all__ = ["app", "count_words", "summarize", "tick"]
