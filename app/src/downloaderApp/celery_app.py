"""The Celery application ``app`` and the settings it runs with.

The configuration is attached lazily (``app.add_defaults`` with a callable): importing the
package never reads the configuration file, so ``downloader --help`` works with a broken file
and the CLI can report a configuration error cleanly. The first use of ``app.conf`` (a worker
starting, a task being sent) loads it and raises :class:`~downloaderApp.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from downloaderApp.config import Settings, get_settings

__all__ = ["app", "celery_settings"]


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The Celery settings; everything but the broker, backend and queue is fixed in code."""
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_default_queue": settings.queue,
        # Replicated queue: survives the loss of a RabbitMQ node; with quorum queues
        # Celery >= 5.5 also turns global QoS off (deprecated in RabbitMQ 4).
        "task_default_queue_type": "quorum",
        # Native delayed delivery (used for retry countdowns on quorum queues) needs a topic
        # (or fanout) exchange; with a direct one the worker would hold delayed retries itself.
        "task_default_exchange_type": "topic",
        # The broker confirms every publish: a send that returns was stored by RabbitMQ.
        "broker_transport_options": {"confirm_publish": True},
        # A publish that meets a lost connection (a broker stopped or failing) is retried on
        # a new connection, which goes to the next broker URL: about 15 s before giving up.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 10,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        # Ack after the task ran, not when received: a crashed worker's task is redelivered.
        "task_acks_late": True,
        # ...also when the worker process dies (OOM kill, SIGKILL) while running it.
        "task_reject_on_worker_lost": True,
        # A worker reserves one message per process/thread: no tasks stuck behind a busy one.
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "result_extended": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
    }


app = Celery("downloaderApp")
app.add_defaults(lambda: celery_settings(get_settings()))
