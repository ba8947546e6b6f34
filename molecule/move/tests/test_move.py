"""The README's runbook "Moving to new brokers", step by step: site.yml with mnew1 (Debian 13)
under `brokers_next` builds a second cluster, RabbitMQ 4.0, beside mold1's 3.10 (Debian 12)
and changes nothing else; playbooks/move-brokers.yml moves the app to it while a client host
submits tasks throughout: no task is lost or run twice, the old broker ends empty and stopped,
an operator's own broker user comes over; site.yml then refuses to put the app hosts back on
the old broker; and with the inventory naming the new broker under `brokers`, site.yml changes
nothing on the app hosts, whose tutorial commands work as before."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celerylab import (
    RECAP,
    RUNNER,
    SAMPLE_URL,
    SECRETS,
    WEB,
    WORKERS,
    ansible_playbook,
    edited_inventory,
    expected_nodes,
    host,
    put_file,
    run_playbook,
    tutorial_download,
)

OLD = RUNNER.get_hosts("brokers")[0]
NEW = RUNNER.get_hosts("spare_broker")[0]
CLIENT = RUNNER.get_hosts("clients")[0]
APP_HOSTS = sorted(set(WORKERS + RUNNER.get_hosts("flower") + [CLIENT]))
CONFIG = "/etc/downloader/downloader.conf"
EXTRA_USER = "move-extra"

# A task a second, each from a new process (which reads the app's configuration afresh, as a
# short-lived client does), until /tmp/move-stop exists; at most 900. Each line of
# /tmp/move-submitted: the task's name and id once the broker confirmed it, or FAILED. The
# names carry the run's first argument: a download of a name that exists fails.
SUBMIT = f"""
import sys
from downloaderApp import download
result = download.delay({SAMPLE_URL!r}, sys.argv[1])
print(sys.argv[1], result.id, flush=True)
"""
# Slow tasks, submitted at once before the move: each download takes 10 s (the test web host's
# slow server), more than two worker hosts of two threads run before the last one's turn.
BURST = f"""
import sys
from downloaderApp import download
for i in range(40):
    name = f"burst-{{sys.argv[1]}}-{{i}}"
    print(name, download.delay(f"http://{WEB}:8001/delay/10000/{{name}}", name).id, flush=True)
"""
SUBMITTER = """#!/bin/sh
i=0
while [ ! -e /tmp/move-stop ] && [ "$i" -lt 900 ]; do
  i=$((i + 1))
  /opt/downloader/venv/bin/python /tmp/move-submit.py "move-$1-$i" \\
    >>/tmp/move-submitted 2>>/tmp/move-errors || echo "FAILED move-$1-$i" >>/tmp/move-submitted
  sleep 1
done
"""


def rabbitmqctl(on: str, *args: str) -> Any:
    result = host(on).run("rabbitmqctl --quiet" + " %s" * len(args) + " --formatter json", *args)
    assert result.rc == 0, f"{on}: {result.stderr}"
    return json.loads(result.stdout)


def submitted() -> dict[str, str]:
    lines = host(CLIENT).file("/tmp/move-submitted").content_string.splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    errors = host(CLIENT).run("tail -n 20 /tmp/move-errors").stdout
    assert not failed, f"submissions failed: {failed[:5]}\n{errors}"
    return dict(line.split() for line in lines)


def runs_logged() -> dict[str, int]:
    """How many times the worker nodes ran each task: "Task NAME[ID] succeeded" lines."""
    counts: dict[str, int] = {}
    for worker in WORKERS:
        out = host(worker).run("journalctl -u 'celery-worker-*@*' --no-pager -o cat").stdout
        for task_id in re.findall(r"Task downloaderApp\.download\[([0-9a-f-]+)\] succeeded", out):
            counts[task_id] = counts.get(task_id, 0) + 1
    return counts


def with_next() -> str:
    """Step 1's inventory: the scenario's, with the new broker under `brokers_next`."""

    def add_next(groups: dict[str, Any]) -> None:
        groups["brokers_next"] = {"hosts": {NEW: None}}

    return edited_inventory("with-next", add_next)


def changed_hosts(out: str) -> dict[str, int]:
    return {name: int(count) for name, count, _, _ in RECAP.findall(out)}


def changed_tasks(out: str, on: list[str]) -> list[str]:
    """ "HOST: TASK" for each task of a run's output that changed one of the hosts ON (not a
    task delegated to the controller, such as the record of the hosts' addresses)."""
    found, task = [], ""
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK [") :].split("]")[0]
        match = re.match(r"changed: \[([^\]\s]+)(?: -> ([^\]\s(]+))?", line)
        if match and match[1] in on and match[2] != "localhost":
            found.append(f"{match[1]}: {task}")
    return found


def brokers_of(on: str) -> set[str]:
    """The broker hosts named by an app host's configuration."""
    text = host(on).file(CONFIG).content_string
    return {name for name in (OLD, NEW) if re.search(rf"\b{name}\b", text)}


@pytest.fixture(scope="module")
def second_cluster() -> str:
    """Step 1: site.yml with the new broker under `brokers_next`; its output."""
    return run_playbook("site.yml", "-i", with_next())


def test_a_second_cluster_is_built_beside_the_first_and_nothing_else_changes(second_cluster: str) -> None:
    assert changed_tasks(second_cluster, [OLD, *APP_HOSTS]) == []
    old_version = host(OLD).run("rabbitmqctl --quiet version").stdout.strip()
    new_version = host(NEW).run("rabbitmqctl --quiet version").stdout.strip()
    assert old_version.startswith("3.10.") and new_version.startswith("4.0."), (old_version, new_version)
    assert rabbitmqctl(NEW, "cluster_status")["disk_nodes"] == [f"rabbit@{NEW}"]
    assert {on: brokers_of(on) for on in APP_HOSTS} == {on: {OLD} for on in APP_HOSTS}


@pytest.fixture(scope="module")
def moved(second_cluster: str) -> Iterator[str]:
    """Step 2, the move, with the client submitting tasks from before it starts to after it
    ends, and a broker user of the operator's own on the old broker; the playbook's output.
    Afterwards, the move's record goes, so that the scenario converges again."""
    old = host(OLD)
    old.run("rabbitmqctl --quiet delete_user %s", EXTRA_USER)  # left by an earlier run of these tests
    assert old.run("rabbitmqctl --quiet add_user %s %s", EXTRA_USER, "extra-password-0").rc == 0
    rights = old.run(
        "rabbitmqctl --quiet set_permissions -p downloader %s %s %s %s", EXTRA_USER, "^$", "^$", "^x$"
    )
    assert rights.rc == 0, rights.stderr
    put_file(CLIENT, "/tmp/move-submit.py", SUBMIT.encode())
    put_file(CLIENT, "/tmp/move-submitter", SUBMITTER.encode())
    put_file(CLIENT, "/tmp/move-burst.py", BURST.encode())
    client = host(CLIENT)
    client.run("rm -f /tmp/move-stop /tmp/move-submitted /tmp/move-errors")
    run = uuid.uuid4().hex[:8]
    start = client.run("systemd-run --unit=move-submitter sh /tmp/move-submitter %s", run)
    assert start.rc == 0, start.stderr
    burst = client.run("/opt/downloader/venv/bin/python /tmp/move-burst.py %s >>/tmp/move-submitted", run)
    assert burst.rc == 0, burst.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not client.file("/tmp/move-submitted").exists:
        time.sleep(1)
    try:
        out = run_playbook("playbooks/move-brokers.yml", "-i", with_next())
        time.sleep(10)  # a few tasks submitted after the move, to the new broker only
    finally:
        client.run("touch /tmp/move-stop")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and client.run("systemctl is-active move-submitter").rc == 0:
            time.sleep(1)
    yield out
    (SECRETS / "brokers-move.json").unlink(missing_ok=True)


def test_every_task_submitted_during_the_move_runs_once(moved: str) -> None:
    # The last worker host waited for the slow tasks on the old broker before it switched.
    assert re.search(r"RETRYING: \[[^\]]+\]: Wait until the old brokers' queues hold no task", moved), moved[
        -3000:
    ]
    tasks = submitted()
    assert len(tasks) > 70, f"only {len(tasks)} tasks submitted"
    deadline = time.monotonic() + 240
    runs = runs_logged()
    while time.monotonic() < deadline and not set(tasks.values()) <= set(runs):
        time.sleep(5)
        runs = runs_logged()
    missing = sorted(name for name, task_id in tasks.items() if task_id not in runs)
    twice = sorted(name for name, task_id in tasks.items() if runs.get(task_id, 0) > 1)
    assert not missing, f"{len(missing)} of {len(tasks)} tasks never ran: {missing[:10]}"
    assert not twice, f"tasks that ran more than once: {twice[:10]}"


def test_the_app_hosts_use_the_new_broker_and_the_old_one_is_empty_and_stopped(moved: str) -> None:
    assert {on: brokers_of(on) for on in APP_HOSTS} == {on: {NEW} for on in APP_HOSTS}
    old = host(OLD).service("rabbitmq-server")
    assert not old.is_running and not old.is_enabled
    queues = rabbitmqctl(NEW, "list_queues", "-p", "downloader", "name", "messages")
    assert any(q["name"] == "celery" for q in queues), queues
    record = json.loads((SECRETS / "brokers-move.json").read_text())
    assert record == {"state": "done", "from": [OLD], "to": [NEW]}


def test_an_operators_own_broker_user_came_over(moved: str) -> None:
    users = {u["user"] for u in rabbitmqctl(NEW, "list_users")}
    assert EXTRA_USER in users
    rights = rabbitmqctl(NEW, "list_user_permissions", EXTRA_USER)
    assert rights == [{"vhost": "downloader", "configure": "^$", "write": "^$", "read": "^x$"}]


def test_site_refuses_to_put_the_app_back_on_the_old_broker(moved: str) -> None:
    rc, out = ansible_playbook("site.yml", "-i", with_next())
    assert rc != 0, out[-3000:]
    assert "records a move of the app from the brokers" in out and "It is done" in out, out[-3000:]
    assert {on: brokers_of(on) for on in APP_HOSTS} == {on: {NEW} for on in APP_HOSTS}
    assert not host(OLD).service("rabbitmq-server").is_running


def test_the_inventory_naming_the_new_broker_changes_no_app_host(moved: str) -> None:
    def name_the_new_brokers(groups: dict[str, Any]) -> None:
        groups["brokers"] = {"hosts": {NEW: None}}

    out = run_playbook("site.yml", "-i", edited_inventory("moved", name_the_new_brokers))
    assert OLD not in changed_hosts(out), "the old broker is in no group of the cluster any more"
    assert changed_tasks(out, APP_HOSTS) == []
    record = tutorial_download(CLIENT, "after-the-move")
    assert record["host"] in WORKERS
    status = host(WORKERS[0]).run("celery -A downloaderApp status")
    assert status.rc == 0, status.stderr
    assert set(re.findall(r"(\S+@\S+): OK", status.stdout)) == expected_nodes()
