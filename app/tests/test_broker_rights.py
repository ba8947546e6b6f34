"""A broker user that may only publish tasks and read its own results.

The rabbitmq role gives the hosts that only submit tasks such a user: it may write to the task
exchange (and the delayed-delivery exchanges a countdown goes through) and create and read
queues named like a reply queue (a UUID), nothing else. These tests make that user on the
test broker with exactly those rights and show what the app does with it: with
``declare_queues = false`` and ``send_sent_events = false`` the tutorial's calls work; remote
control and the task queue itself are refused by RabbitMQ; the CLI says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest

from support import LoopbackServer, downloader, rabbitmqctl
from testenv import BROKER_URL, QUEUE

UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PUBLISH_ONLY = (f"^{UUID}$", f"^({QUEUE}|celery_delayed_[0-9]+)$", f"^{UUID}$")


@pytest.fixture(scope="module")
def publisher_url(broker: str) -> Iterator[str]:
    """The test broker's URL with a user of the publish-only rights, on the tests' vhost."""
    parts = urlsplit(BROKER_URL)
    vhost = unquote(parts.path[1:]) or "/"
    user, password = f"test-publisher-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, *PUBLISH_ONLY)
        netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
        yield urlunsplit((parts.scheme, netloc, "/" + quote(vhost, safe=""), "", ""))
    finally:
        rabbitmqctl("delete_user", user)


def _publisher_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "DOWNLOADER_BROKER_URL": url,
        "DOWNLOADER_DECLARE_QUEUES": "false",
        "DOWNLOADER_SEND_SENT_EVENTS": "false",
        **extra,
    }


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )


TUTORIAL = """
import json
from downloaderApp import download, list
done = download.delay({url!r}, {name!r}).get(timeout=30)
later = download.apply_async(({url!r}, {name!r} + ".later"), countdown=1).get(timeout=30)
listed = [record["name"] for record in list.delay().get(timeout=5)]
print(json.dumps([done["filename"], later["filename"], listed]))
"""

PROBE = """
import json
from amqp.exceptions import AccessRefused
from downloaderApp.celery_app import app
said = {{}}
for what in ("consume", "purge", "delete"):
    with app.connection_for_read() as conn:
        channel = conn.channel()
        try:
            if what == "consume":
                channel.basic_consume({queue!r}, callback=lambda message: None)
            elif what == "purge":
                channel.queue_purge({queue!r})
            else:
                channel.queue_delete({queue!r})
            said[what] = "allowed"
        except AccessRefused as exc:
            said[what] = str(exc)
print(json.dumps(said))
"""


def test_a_publish_only_user_runs_the_tutorials_calls(
    worker: str, publisher_url: str, http_server: LoopbackServer
) -> None:
    """download.delay().get(), a countdown and list.delay().get() with nothing but those
    rights: the task queue is checked, not declared; no task-sent event is sent."""
    name = f"rights-{uuid.uuid4().hex[:8]}.bin"
    code = TUTORIAL.format(url=http_server.url("/fixed"), name=name)
    proc = _python(code, _publisher_env(publisher_url))
    assert proc.returncode == 0, proc.stderr[-3000:]
    done, later, listed = json.loads(proc.stdout.splitlines()[-1])
    assert (done, later) == (name, name + ".later")
    assert name in listed and name + ".later" in listed


def test_the_same_user_may_not_touch_the_task_queue_nor_control_the_workers(
    worker: str, publisher_url: str
) -> None:
    """Consuming, purging or deleting the task queue is refused by RabbitMQ, and so is remote
    control: `downloader status` exits 7 and says where it works; the worker still answers."""
    proc = _python(PROBE.format(queue=QUEUE), _publisher_env(publisher_url))
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout.splitlines()[-1])
    for what in ("consume", "purge", "delete"):
        assert "ACCESS_REFUSED" in said[what] and f"queue '{QUEUE}'" in said[what], said
    for command in ("status", "list"):
        refused = downloader(command, env=_publisher_env(publisher_url))
        assert refused.returncode == 7, refused.stdout + refused.stderr
        assert "ACCESS_REFUSED" in refused.stderr, refused.stderr
        assert "worker or Flower host" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr
    assert downloader("status").returncode == 0, "the worker stopped answering"


def test_without_declare_queues_false_the_user_is_refused_and_told(
    worker: str, publisher_url: str, http_server: LoopbackServer
) -> None:
    """With Celery's default (declare the queue before sending), the same user is refused:
    declaring is a right to delete, which it does not have. Exit 7 with RabbitMQ's words."""
    env = _publisher_env(publisher_url, DOWNLOADER_DECLARE_QUEUES="true")
    name = f"refused-{uuid.uuid4().hex[:6]}"
    proc = downloader("submit", http_server.url("/fixed"), name, env=env)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "ACCESS_REFUSED" in proc.stderr and QUEUE in proc.stderr, proc.stderr


def test_a_task_queue_that_does_not_exist_is_an_error_not_a_lost_task(
    broker: str, http_server: LoopbackServer
) -> None:
    """No worker ever declared this queue: the passive check fails, the CLI exits 7 and says
    so, where a publish to an exchange without the queue would have been dropped unseen."""
    missing = f"downloader-test-missing-{uuid.uuid4().hex[:8]}"
    env = {"DOWNLOADER_DECLARE_QUEUES": "false", "DOWNLOADER_QUEUE": missing}
    proc = downloader("submit", http_server.url("/fixed"), "never", env=env)
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert f"no queue '{missing}'" in proc.stderr and "has any started" in proc.stderr, proc.stderr
