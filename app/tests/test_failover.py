"""The failover module (downloaderApp/failover.py) in an app that is not the downloader.

The cluster ships that file beside every other app's configuration module, whose settings name
its classes; here a plain ``Celery`` app is given the same settings, against the real test
broker. RabbitMQ refuses a task state for real (a queue policy: no room, reject-publish) and a
reply queue's declaration (a queue of that name with other properties), and a real worker (in
this process) runs the task and shows which of its connections ask the broker for confirms.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.app.task import Context
from celery.backends.rpc import RPCBackend as CeleryRPCBackend
from celery.contrib.testing.worker import start_worker
from kombu import Connection
from kombu.exceptions import OperationalError

import downloaderApp
from downloaderApp.failover import RPCBackend
from support import rabbitmqctl
from testenv import RUN_ID

MODULE = "downloaderApp.failover"


def plain_app(broker: str, queue: str) -> Celery:
    """A stock Celery app with the failover settings of the cluster's configuration module."""
    app = Celery(f"failover-test-{RUN_ID}", set_as_current=False)
    app.conf.update(
        broker_url=broker,
        result_backend=f"{MODULE}:RPCBackend+rpc://",
        worker_consumer=f"{MODULE}:Consumer",
        broker_transport_options={"confirm_publish": True},
        task_default_queue=queue,
        worker_send_task_events=True,
    )
    return app


@pytest.fixture
def queue(broker: str) -> Iterator[str]:
    name = f"failover-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    yield name
    with Connection(broker) as conn:
        conn.default_channel.queue_delete(name)


@pytest.fixture
def full_reply_queue(broker: str) -> Iterator[tuple[Celery, str]]:
    """A plain app whose reply queue the broker refuses every message for."""
    app = plain_app(broker, f"failover-{RUN_ID}")
    reply_queue = str(app.backend.oid)
    policy = f"failover-test-{RUN_ID}"
    with app.connection_for_write() as conn:
        app.backend.binding(conn.default_channel).declare()
        rabbitmqctl(
            "set_policy",
            "--apply-to",
            "queues",
            policy,
            f"^{reply_queue}$",
            json.dumps({"max-length": 0, "overflow": "reject-publish"}),
        )
        try:
            deadline = time.monotonic() + 30
            while reply_queue not in rabbitmqctl(
                "list_queues", "name", "policy", "--no-table-headers"
            ):
                assert time.monotonic() < deadline, "the policy was not applied to the reply queue"
                time.sleep(0.2)
            yield app, reply_queue
        finally:
            rabbitmqctl("clear_policy", policy)
            conn.default_channel.queue_delete(reply_queue)


def test_a_task_state_the_broker_refuses_is_dropped_not_raised(
    full_reply_queue: tuple[Celery, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The configured backend is the failover module's; the broker's refusal (a nack under
    publisher confirms) of a result is logged and dropped, where stock rpc:// raises it."""
    app, reply_queue = full_reply_queue
    assert type(app.backend) is RPCBackend
    task_id = str(uuid.uuid4())
    request = Context(id=task_id, reply_to=reply_queue, correlation_id=task_id)
    with pytest.raises(OperationalError):
        CeleryRPCBackend(app=app).store_result(task_id, 42, "SUCCESS", request=request)
    with caplog.at_level(logging.WARNING, logger=MODULE):
        assert app.backend.store_result(task_id, 42, "SUCCESS", request=request) == 42
    assert (
        f"refused the SUCCESS state of task {task_id} for reply queue {reply_queue}" in caplog.text
    )


@pytest.fixture
def running_worker(broker: str, queue: str) -> Iterator[tuple[Celery, Any, Any]]:
    """The plain app with a task `add`, and a real worker of it in this process."""
    app = plain_app(broker, queue)

    @app.task(name="add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    # The in-process worker's loop wakes for the broker's heartbeat: with the default (60 s)
    # it noticed the end of the test only about 10 s later.
    app.conf.broker_heartbeat = 2
    try:
        with start_worker(app, perform_ping_check=False) as worker:
            yield app, add, worker
    finally:
        # start_worker made the plain app the process's default: the downloader's again.
        downloaderApp.app.set_current()
        downloaderApp.app.set_default()


def test_a_worker_sends_its_events_without_confirms_and_its_results_with(
    running_worker: tuple[Celery, Any, Any],
) -> None:
    """Its event connection (the one the freeze was on) asks for no publisher confirms, also
    for the connections it makes after a loss; the connection that publishes results and
    tasks keeps them."""
    app, _, worker = running_worker
    events = worker.consumer.event_dispatcher.connection
    assert events.connected and events.connection.confirm_publish is False
    assert events.transport_options["confirm_publish"] is False
    with app.producer_or_acquire() as producer:
        publishing = producer.connection.ensure_connection(max_retries=3)
        assert publishing.connection.confirm_publish is True


def test_a_refused_reply_queue_moves_and_the_task_is_sent_once(
    broker: str, running_worker: tuple[Celery, Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A client thread whose reply queue the broker refuses to declare (on a cluster: NOT_FOUND,
    its node is down; here PRECONDITION_FAILED, the same kind of channel error) sends the task
    once, with the new reply queue, and reads its result there."""
    app, add, _ = running_worker
    outcome: dict[str, Any] = {}

    def client() -> None:  # a thread of its own: its own reply queue and backend
        old = outcome["old"] = app.thread_oid
        with Connection(broker) as other:
            other.default_channel.queue_declare(old, durable=False, auto_delete=False)
            try:
                outcome["value"] = add.delay(2, 3).get(timeout=30)
            except Exception as exc:
                outcome["error"] = exc
            finally:
                other.default_channel.queue_delete(old)
        outcome["new"] = app.thread_oid

    with caplog.at_level(logging.WARNING, logger=MODULE):
        thread = threading.Thread(target=client)
        thread.start()
        thread.join(timeout=60)
    assert "error" not in outcome, repr(outcome.get("error"))
    assert outcome["value"] == 5
    assert outcome["new"] != outcome["old"]
    assert f"reply queue {outcome['old']} refused" in caplog.text


def test_a_kept_producer_whose_channel_was_closed_sends_on_a_new_one(
    running_worker: tuple[Celery, Any, Any],
) -> None:
    """celery beat keeps one producer, and its channel, for its whole life (a client's sends
    take a producer from Celery's pool instead). With that channel closed, as the broker's
    refusal of a reply queue left the scheduler's on a cluster, the next send goes out on a
    new channel instead of failing ("channel disconnected"), and so do the ones after."""
    app, add, _ = running_worker
    with app.connection_for_write() as conn:
        producer = app.amqp.Producer(conn, auto_declare=False)
        assert add.apply_async((1, 1), producer=producer).get(timeout=30) == 2
        producer.channel.close()
        assert add.apply_async((2, 2), producer=producer).get(timeout=30) == 4
        assert add.apply_async((3, 3), producer=producer).get(timeout=30) == 6
