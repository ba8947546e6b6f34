"""Each kind of host connects to the brokers as its own user, with the rights its kind needs
and no more (the rabbitmq role's README has the table): the workers' user does everything on
the vhost, Flower's watches and controls the workers and sends tasks, a client's only sends
tasks and reads their results. What a client host may not do is in test_real_hosts.py (this
scenario's client host); these tests hold on every scenario.
"""

from __future__ import annotations

import json
import re

from celerylab import BROKERS, CLIENTS, FLOWERS, WORKERS, host, probe

APP_CONFIG = "/etc/downloader/downloader.conf"
TASK_QUEUE = "celery"
USERS = {"worker": "downloader", "flower": "downloader-flower", "client": "downloader-client"}


def kind_of(name: str) -> str:
    return "worker" if name in WORKERS else "flower" if name in FLOWERS else "client"


def test_each_kind_of_host_connects_as_its_own_user() -> None:
    """The configuration of every app host names the user of its kind in every broker URL;
    only a worker's declares the task queue, only a client's sends no events; the vhost has
    these three users and the administrator, no other."""
    for name in sorted(set(WORKERS + FLOWERS + CLIENTS)):
        kind = kind_of(name)
        config = host(name).file(APP_CONFIG).content_string
        urls = re.search(r"^broker_url = (.+)$", config, re.M)
        assert urls, f"{name}: no broker_url in {APP_CONFIG}"
        users = {url.split("://", 1)[1].split(":", 1)[0] for url in urls.group(1).split(";")}
        assert users == {USERS[kind]}, f"{name} ({kind}) connects as {users}"
        assert f"declare_queues = {str(kind == 'worker').lower()}" in config, f"{name}: {config}"
        assert f"send_sent_events = {str(kind != 'client').lower()}" in config, f"{name}: {config}"
    listed = host(BROKERS[0]).check_output("rabbitmqctl --quiet list_permissions -p downloader")
    on_vhost = {line.split("\t")[0] for line in listed.splitlines()[1:] if line.strip()}
    assert on_vhost == {*USERS.values(), "admin"}, listed


def test_neither_flower_nor_a_client_may_take_or_drop_the_task_queue() -> None:
    """With the configuration of a Flower or a client host, consuming, getting, purging and
    deleting the task queue are each refused by RabbitMQ (their users have no read or
    configure right on it)."""
    assert FLOWERS, "the scenario has no Flower host"
    for name in FLOWERS + CLIENTS:
        out = host(name).check_output(
            "timeout 60 /opt/downloader/venv/bin/python -c %s %s", probe("task_queue_rights.py"), TASK_QUEUE
        )
        said = json.loads(out.strip().splitlines()[-1])
        for what, outcome in said.items():
            assert "ACCESS_REFUSED" in outcome and f"queue '{TASK_QUEUE}'" in outcome, (name, what, outcome)
