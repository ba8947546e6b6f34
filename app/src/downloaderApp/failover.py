"""What a Celery app needs beyond Celery's defaults to ride out the loss of a broker node.

The downloader uses these classes (``downloaderApp.celery_app``). The cluster ships this very
file, as ``celery_failover.py``, beside every other app's configuration module, whose settings
name them (``result_backend``, ``worker_consumer``) and register the transport: an app of one's
own gets them without changing its code. So it imports nothing of ``downloaderApp`` and names
its own classes through ``__name__``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import kombu.transport
from amqp.exceptions import ChannelError, MessageNacked
from celery.backends.rpc import RPCBackend as CeleryRPCBackend
from celery.signals import before_task_publish
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import OperationalError
from kombu.transport import pyamqp

__all__ = ["Consumer", "HostVerifyingTransport", "RPCBackend", "use_host_verifying_transport"]

logger = logging.getLogger(__name__)

# Per thread: reply queues given up by RPCBackend.on_task_call, and the names they moved to.
_moved = threading.local()


class RPCBackend(CeleryRPCBackend):
    """``rpc://`` whose reply queue moves when its broker node is lost, and whose task states
    are dropped, not raised, when RabbitMQ refuses them.

    The backend declares the client's reply queue (named after the thread, durable, on the
    broker node the client is connected to) before every send. On a cluster, while that node
    is down RabbitMQ refuses to declare the queue again (NOT_FOUND: its home node is down),
    and every later send of a long-lived client would fail until that node returns. Here the
    send whose declare is refused takes a new queue name, on the node that answers now, and
    goes on with it: the task is sent once (the declare comes before the publish). Results
    that were on their way to the old queue are lost with it (rpc:// results are transient);
    the tasks themselves are not.

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

    def on_task_call(self, producer: Any, task_id: str) -> None:
        _on_a_live_channel(producer)
        try:
            super().on_task_call(producer, task_id)
        except ChannelError as exc:
            old = self.oid
            if f"'{old}'" not in str(exc):
                raise
            self.move_reply_queue()
            logger.warning(
                "reply queue %s refused (%s); results now come to %s", old, exc, self.oid
            )
            # The task's message already names the old queue: _to_the_moved_reply_queue
            # rewrites it. The refusal may have left the producer's channel closed.
            vars(_moved).setdefault("names", {})[old] = self.oid
            _on_a_live_channel(producer)
            super().on_task_call(producer, task_id)

    def move_reply_queue(self) -> None:
        """Give this thread a new, random reply-queue name, and drop the result consumer of
        the old one (the next result wait starts one on the new queue)."""
        self.app._local.oid = str(uuid.uuid4())
        self.__dict__.pop("oid", None)  # cached (cached_property) from the app's thread_oid
        consumer = self.result_consumer
        if consumer._connection is not None:
            try:
                consumer._connection.close()
            except Exception:  # the old connection is often dead already: nothing to free
                logger.debug("closing the old result connection failed", exc_info=True)
        consumer._consumer = None
        consumer._connection = None


def _on_a_live_channel(producer: Any) -> None:
    """Give PRODUCER a new channel on its connection when its own was closed.

    On a cluster the broker's refusal of the reply queue (its node down) left the producer's
    channel closed for good: a client's send after the move failed with "channel
    disconnected", and celery beat, which keeps one producer and its channel for its whole
    life, failed every later tick until the scheduler restarted.
    """
    if not getattr(producer.channel, "connection", None):
        producer.revive(producer.connection.channel())


@before_task_publish.connect(weak=False)
def _to_the_moved_reply_queue(properties: dict[str, Any] | None = None, **_: Any) -> None:
    """A task message that names a reply queue this thread gave up names its new one."""
    if properties is not None:
        new = getattr(_moved, "names", {}).get(properties.get("reply_to"))
        if new is not None:
            properties["reply_to"] = new


class Consumer(CeleryConsumer):
    """A worker's consumer whose event connection publishes without publisher confirms.

    A worker sends its monitoring events (task-started, task-succeeded, heartbeats...) on a
    connection of their own, whose socket the worker's main thread also reads (for broker
    heartbeats). With publisher confirms, a pool thread of the threads pool that flushes the
    events waits on that socket for the broker's confirm while holding the dispatcher's lock;
    when the main thread reads the confirm first, the pool thread waits for good, and every
    other thread, the main one included, then waits for its lock: the worker froze after a
    few hundred tasks. Events are monitoring data (Flower's view), sent as Celery sends them
    by default: without confirms. Tasks and their results keep confirms.

    The consumer makes that connection with ``connection_for_write`` (its Events step is the
    one caller in Celery 5.7, which the lock files pin); the option is set before the
    connection opens, so its reconnections (to the next broker) have no confirms either.
    """

    def connection_for_write(self, url: Any = None, heartbeat: Any = None) -> Any:
        conn = self.app.connection_for_write(url=url, heartbeat=heartbeat)
        conn.transport_options = {**(conn.transport_options or {}), "confirm_publish": False}
        return self.ensure_connected(conn)


class HostVerifyingTransport(pyamqp.Transport):
    """py-amqp transport that verifies each broker's certificate against the host it dials.

    With ``broker_use_ssl = {..., "server_hostname": None}`` kombu puts the host of the URL in
    use into ``server_hostname``, but into the settings dict itself, which every connection of
    the app shares: from then on every connection, the failover to another broker included,
    expects the first broker's name, and fails with "Hostname mismatch". Here each attempt
    gets a copy to fill in, so the shared settings keep ``None``.
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


def use_host_verifying_transport() -> None:
    """Make :class:`HostVerifyingTransport` the process's "pyamqp" and "amqp" transport.

    Every kombu connection of the process, pooled ones (task publishing, remote-control
    replies) included, resolves the URL's scheme through these aliases: kombu's pool makes its
    connections with its own class, so a connection class of the app's would not reach them.
    """
    for alias in ("pyamqp", "amqp"):
        kombu.transport.TRANSPORT_ALIASES[alias] = f"{__name__}:HostVerifyingTransport"
        getattr(kombu.transport, "_transport_cache", {}).pop(alias, None)
