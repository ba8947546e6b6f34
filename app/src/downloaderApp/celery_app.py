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
import uuid
from typing import Any

import kombu.transport
from amqp.exceptions import ChannelError, MessageNacked
from celery import Celery
from celery.app.amqp import AMQP
from celery.app.backends import by_url
from celery.app.events import Events
from celery.backends.rpc import RPCBackend
from celery.events.dispatcher import EventDispatcher
from kombu import Queue
from kombu.exceptions import OperationalError
from kombu.transport import pyamqp

from downloaderApp.config import Settings, get_settings

__all__ = [
    "DownloaderAMQP",
    "DownloaderCelery",
    "DownloaderEventDispatcher",
    "DownloaderEvents",
    "DownloaderRPCBackend",
    "HostVerifyingTransport",
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


class DownloaderRPCBackend(RPCBackend):
    """``rpc://`` whose task states are dropped, not raised, when RabbitMQ refuses them.

    Workers publish a task's states (STARTED, then its result) to the reply queue of the
    client that sent it, with publisher confirms. RabbitMQ refuses (nacks) such a message
    when the queue cannot take it: on a cluster, while the node that holds the queue goes
    down. Celery would then stop the task before its body runs (a refused STARTED) or fail
    it after (a refused result) and, with the threads pool, leave its message unacknowledged
    until the worker restarts. The state of that one task is lost to that one client, whose
    queue is gone anyway; the task itself runs and is acknowledged. Every other error
    (a broker that cannot be reached at all, after kombu's retries) is raised as before.
    """

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        try:
            return super().store_result(
                task_id, result, state, traceback=traceback, request=request, **kwargs
            )
        except OperationalError as exc:
            if not isinstance(exc.__cause__, MessageNacked):
                raise
            reply_to, _ = self.destination_for(task_id, request)
            logger.warning(
                "the broker refused the %s state of task %s for reply queue %s: not sent",
                state,
                task_id,
                reply_to,
            )
            return result


class DownloaderEventDispatcher(EventDispatcher):
    """Event dispatcher whose own connection publishes without publisher confirms.

    A worker sends its monitoring events (task-started, task-succeeded, heartbeats...) on a
    connection of their own, whose socket the worker's main thread also reads (for broker
    heartbeats). With publisher confirms, a pool thread of the threads pool that flushes the
    events waits on that socket for the broker's confirm while holding the dispatcher's lock;
    when the main thread reads the confirm first, the pool thread waits for good, and every
    other thread, the main one included, then waits for its lock: the worker froze after a
    few hundred tasks. Events are monitoring data (Flower's view), sent as Celery sends them
    by default: without confirms. Tasks and their results keep confirms. A dispatcher given a
    channel (a client's task-sent event, on its task producer's channel) is left as it is.
    """

    def __init__(self, connection: Any = None, *args: Any, **kwargs: Any) -> None:
        channel = args[2] if len(args) > 2 else kwargs.get("channel")
        if connection is not None and channel is None:
            # For the connections kombu makes from now on (a reconnect)...
            connection.transport_options = {
                **(connection.transport_options or {}),
                "confirm_publish": False,
            }
            # ...and for the channels of the one the worker has already opened.
            if connection.connected:
                connection.connection.confirm_publish = False
        super().__init__(connection, *args, **kwargs)


class DownloaderEvents(Events):
    """``app.events`` with :class:`DownloaderEventDispatcher`."""

    dispatcher_cls = "downloaderApp.celery_app:DownloaderEventDispatcher"


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


class HostVerifyingTransport(pyamqp.Transport):
    """py-amqp transport that verifies each broker's certificate against the host it dials.

    With ``broker_use_ssl = {..., "server_hostname": None}`` kombu puts the host of the URL in
    use into ``server_hostname``, but into the settings dict itself, which every connection of
    the app shares: from then on every connection, the failover to another broker included,
    expects the first broker's name, and fails with "Hostname mismatch". Here each attempt
    gets a copy to fill in, so the shared settings keep ``None``. Registered below as the
    process's "pyamqp" (and "amqp") transport.
    """

    def establish_connection(self) -> Any:
        conninfo: Any = self.client
        shared = conninfo.ssl
        if not isinstance(shared, dict) or shared.get("server_hostname", "") is not None:
            return super().establish_connection()
        conninfo.ssl = dict(shared)
        try:
            return super().establish_connection()
        finally:
            conninfo.ssl = shared


# Every kombu connection of the process, pooled ones (task publishing, remote-control
# replies) included, resolves "pyamqp"/"amqp" to the transport above: kombu's pool makes its
# connections with its own class, so a connection class of ours would not reach them.
for _alias in ("pyamqp", "amqp"):
    kombu.transport.TRANSPORT_ALIASES[_alias] = "downloaderApp.celery_app:HostVerifyingTransport"
    getattr(kombu.transport, "_transport_cache", {}).pop(_alias, None)


class DownloaderCelery(Celery):
    """Celery whose ``rpc://`` reply queue moves to a new name when its broker node is lost.

    The rpc:// result backend declares the client's reply queue (named after the thread,
    durable, on the broker node the client is connected to) before every send. On a cluster,
    while that node is down RabbitMQ refuses to declare the queue again (NOT_FOUND: its home
    node is down), and every later send of a long-lived client would fail until that node
    returns. Here a send that fails on declaring the reply queue takes a new queue name, on
    the node that answers now, and is made once more. The task is sent once: the declare
    comes before the publish. Results that were on their way to the old queue are lost with
    it (rpc:// results are transient); the tasks themselves are not.

    Its events are sent by :class:`DownloaderEventDispatcher` (no publisher confirms on an
    event connection of its own), its results by :class:`DownloaderRPCBackend`, and its
    connections verify every broker's host name (:class:`HostVerifyingTransport`); where the
    settings say ``declare_queues = false`` it sends through :class:`PassiveQueue`.
    """

    events_cls = "downloaderApp.celery_app:DownloaderEvents"
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
        """The configured result backend; ``rpc://`` is :class:`DownloaderRPCBackend`."""
        cls, url = by_url(self.backend_cls or self.conf.result_backend, self.loader)
        if cls is RPCBackend:
            cls = DownloaderRPCBackend
        return cls(app=self, url=url)

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().send_task(name, *args, **kwargs)
        except ChannelError as exc:
            old = self.thread_oid
            if not isinstance(self.backend, RPCBackend) or f"'{old}'" not in str(exc):
                raise
            self.move_reply_queue()
            logger.warning(
                "reply queue %s refused (%s); results now come to %s", old, exc, self.thread_oid
            )
            return super().send_task(name, *args, **kwargs)

    def move_reply_queue(self) -> None:
        """Give this thread a new, random reply-queue name, and drop the result consumer of
        the old one (the next result wait starts one on the new queue)."""
        self._local.oid = str(uuid.uuid4())
        backend = self.backend
        backend.__dict__.pop("oid", None)  # the backend caches the name (cached_property)
        consumer = backend.result_consumer
        if consumer._connection is not None:
            try:
                consumer._connection.close()
            except Exception:  # the old connection is often dead already: nothing to free
                logger.debug("closing the old result connection failed", exc_info=True)
        consumer._consumer = None
        consumer._connection = None


app = DownloaderCelery("downloaderApp")
app.add_defaults(lambda: celery_settings(get_settings()))
