"""The Celery application ``app`` and the settings it runs with.

The configuration is attached lazily (``app.add_defaults`` with a callable): importing the
package never reads the configuration file, so ``downloader --help`` works with a broken file
and the CLI can report a configuration error cleanly. The first use of ``app.conf`` (a worker
starting, a task being sent, any ``celery -A downloaderApp ...`` command) loads it and raises
:class:`~downloaderApp.errors.ConfigError` (:class:`~downloaderApp.errors.ConfigUnreadable` for
a file this user may not read), and so does every later use: the app never runs on Celery's
own defaults instead (:meth:`DownloaderCelery._load_config`).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.app.backends import by_url
from celery.backends.rpc import RPCBackend as CeleryRPCBackend
from kombu import Queue

from downloaderApp.config import Settings, get_settings
from downloaderApp.failover import RPCBackend, use_host_verifying_transport

__all__ = [
    "DownloaderAMQP",
    "DownloaderCelery",
    "PassiveQueue",
    "app",
    "celery_settings",
]

logger = logging.getLogger(__name__)


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The Celery settings; everything but the broker, backend and queue is fixed in code."""
    fixed: dict[str, Any] = {
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
        # The worker's events go out without publisher confirms (failover.Consumer says why).
        "worker_consumer": "downloaderApp.failover:Consumer",
        "task_send_sent_event": settings.send_sent_events,
        "broker_connection_retry_on_startup": True,
        "result_extended": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
    }
    if settings.broker_ca_file is not None:
        # TLS on every broker connection (tasks, results, events, remote control): the
        # broker's certificate must chain to this CA and name the host of the URL in use
        # (server_hostname None: kombu takes it from the current URL, so failover works).
        fixed["broker_use_ssl"] = {
            "ca_certs": str(settings.broker_ca_file),
            "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": None,
        }
    return fixed


class PassiveQueue(Queue):
    """A task queue that this process never creates, binds or changes.

    Celery declares the task queue, its exchange and their binding before it sends a task:
    rights to configure them are also rights to delete them. A broker user that may only
    publish (Flower's, a client's) has none of those, and sends through this queue instead:
    its declare is passive (which needs no rights), so a queue that does not exist yet (no
    worker has started) is an error (NOT_FOUND) and not a task that the exchange drops.
    """

    def declare(self, nowait: bool = False, channel: Any = None) -> str:
        self.queue_declare(nowait=nowait, passive=True, channel=channel)
        return str(self.name)


class DownloaderAMQP(AMQP):
    """``app.amqp`` whose task queues are :class:`PassiveQueue` unless ``declare_queues``."""

    def Queues(self, queues: Any, *args: Any, **kwargs: Any) -> Any:
        made = super().Queues(queues, *args, **kwargs)
        if not get_settings().declare_queues:
            for name, queue in list(made.items()):
                made[name] = PassiveQueue(**queue.as_dict())
        return made


# Every kombu connection of the process verifies the host name of the broker it dials.
use_host_verifying_transport()


class DownloaderCelery(Celery):
    """The downloader's Celery: configured from its settings file, failing over as the
    failover module makes it.

    Its results go through :class:`~downloaderApp.failover.RPCBackend` (its reply queue
    moves off a lost broker node, a state the broker refuses is dropped), its worker's events
    through :class:`~downloaderApp.failover.Consumer`'s connection (no publisher confirms),
    and its connections verify every broker's host name
    (:class:`~downloaderApp.failover.HostVerifyingTransport`); where the settings say
    ``declare_queues = false`` it sends through :class:`PassiveQueue`.
    """

    amqp_cls = "downloaderApp.celery_app:DownloaderAMQP"

    def _load_config(self) -> Any:
        """Celery's configuring, after reading the settings (a ``ConfigError`` is raised here).

        Raised from the lazy defaults (``add_defaults``) instead, the error would come after
        Celery had marked the app configured and consumed them: the next use of ``app.conf``
        would then run silently on Celery's own defaults (a broker on localhost). Raised
        before, it leaves the app unconfigured, and every use raises it again. The settings
        are cached: the defaults' own call reads nothing more.
        """
        get_settings()
        return super()._load_config()

    def _get_backend(self) -> Any:
        """The configured result backend; ``rpc://`` is the failover module's RPCBackend."""
        cls, url = by_url(self.backend_cls or self.conf.result_backend, self.loader)
        if cls is CeleryRPCBackend:
            cls = RPCBackend
        return cls(app=self, url=url)


app = DownloaderCelery("downloaderApp")
app.add_defaults(lambda: celery_settings(get_settings()))
