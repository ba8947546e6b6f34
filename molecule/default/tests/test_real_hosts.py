"""What operators' servers have and bare test containers do not, and what it must not break:
SSH on another port, client hosts that run services of their own, a host that is down during a
run, users outside the app's group, bad input in the inventory, and --check on an inventory
that has never been converged.

The scenario's hosts are reached as real ones are (molecule.yml): over SSH as the sudo user
`deploy`, by FQDN inventory names, worker2's sshd on port 2222, and client1 running its own
application server on 8080. The probes go through `docker exec`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

from celerylab import (
    ALL_CLIENTS,
    AMQP_PORT,
    BROKERS,
    CLIENTS,
    CLUSTER,
    FLOWERS,
    INVENTORY,
    OTHER_APP_WORKERS,
    PROJECT,
    RECAP,
    RUNNER,
    WEB,
    WORKERS,
    ansible_playbook,
    connect,
    docker,
    expected_nodes,
    host,
    nodes_of,
    python,
    set_worker_nodes,
    short,
    tutorial_download,
    worker_unit,
)

MONITORS = RUNNER.get_hosts("monitoring")
CLIENT_SERVICE_PORT = 8080  # client1's own application server (molecule/shared/prepare.yml)
SSH_KEY = PROJECT / ".cache/ssh/test_ed25519"
APP_CONFIG = "/etc/downloader/downloader.conf"


def ssh_endpoint(name: str) -> tuple[str, int]:
    """Where Ansible logs in to a host: its address and SSH port, as the inventory says."""
    variables = RUNNER.get_variables(name)
    return variables["ansible_host"], int(variables.get("ansible_port", 22))


def ssh_login(name: str) -> subprocess.CompletedProcess[str]:
    """A fresh SSH login as the operator (deploy) on the host's own port, and a sudo."""
    address, port = ssh_endpoint(name)
    return subprocess.run(
        ["ssh", "-i", str(SSH_KEY), "-p", str(port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         f"deploy@{address}", "sudo", "-n", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_every_host_still_takes_an_ssh_login_on_its_own_port() -> None:
    """The firewall closed every zone, yet each host still takes a new login where Ansible logs
    in; worker2's sshd listens on 2222 only, which no firewalld service names."""
    hosts = sorted(set(CLUSTER + ALL_CLIENTS + MONITORS))
    assert any(ssh_endpoint(name)[1] != 22 for name in hosts), "no host of the scenario is on another port"
    for name in hosts:
        login = ssh_login(name)
        assert login.returncode == 0, f"{name} on {ssh_endpoint(name)}: {login.stderr}"
    for name in hosts:
        port = ssh_endpoint(name)[1]
        if port != 22:
            assert connect(WEB, name, 22) != "open", f"{name}: nothing should listen on 22"
            assert connect(WEB, name, port) == "open", f"{name}: port {port} is closed to other hosts"


def test_client_hosts_keep_their_own_services_and_submit_tasks() -> None:
    """A host that is only a client runs an application server of its own: the converge left
    its firewall alone (no firewalld installed there), the server still answers other hosts,
    and the tutorial's client code submits a download from it (the downloader's client hosts;
    test_two_apps sends the reports app's tasks from its own)."""
    assert CLIENTS, "the scenario has no client host"
    for client in ALL_CLIENTS:
        assert connect(WEB, client, CLIENT_SERVICE_PORT) == "open"
        assert not host(client).package("firewalld").is_installed, f"{client} got firewalld"
    for client in CLIENTS:
        record = tutorial_download(client, f"from-client-{uuid.uuid4().hex[:6]}.bin")
        assert record["host"] in WORKERS, record


def test_an_operator_in_the_app_group_runs_the_tutorial_commands_and_others_are_told_why() -> None:
    """`deploy` is listed in celery_app_operators on the client host: the tutorial's
    `list.delay().get(timeout=1)` works for that user. A user outside the group (nobody) is
    told which file it cannot read and which group to join, instead of a connection refused by
    a localhost broker."""
    client = CLIENTS[0]
    code = "from downloaderApp import list; print(len(list.delay().get(timeout=1)), 'files')"
    allowed = host(client).run("cd / && sudo -u deploy /opt/downloader/venv/bin/python -c %s", code)
    assert allowed.rc == 0 and "files" in allowed.stdout, allowed.stdout + allowed.stderr
    for command in ("downloader status", "celery -A downloaderApp status"):
        refused = host(client).run(f"cd / && sudo -u nobody {command}")
        said = refused.stdout + refused.stderr
        assert refused.rc != 0, f"{command}: {said}"
        assert APP_CONFIG in said and "downloader" in said, f"{command}: {said}"
        assert "Connection refused" not in said, f"{command} fell back to a default broker: {said}"


def test_a_client_host_submits_tasks_but_may_not_control_the_workers() -> None:
    """The client host's broker user may send tasks and read their results, nothing else:
    `celery control shutdown` (aimed at one node, in case it were allowed) is refused by
    RabbitMQ and every worker node still answers; `downloader status` and `downloader list`
    exit 7 and say where they work. The same commands work on the Flower host."""
    client = CLIENTS[0]
    target = sorted(expected_nodes())[0]
    shutdown = host(client).run(f"celery -A downloaderApp control shutdown -d {target} --timeout 3")
    said = shutdown.stdout + shutdown.stderr
    assert shutdown.rc != 0 and "ACCESS_REFUSED" in said and "downloader-client" in said, said
    for command in ("status", "list"):
        refused = host(client).run(f"downloader {command}")
        assert refused.rc == 7, refused.stdout + refused.stderr
        assert "worker or Flower host" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    status = host(FLOWERS[0]).run("downloader status")
    assert status.rc == 0, status.stdout + status.stderr
    assert all(f"{node}: OK" in status.stdout for node in expected_nodes()), status.stdout


def test_a_run_with_a_worker_host_down_converges_the_others_and_keeps_its_place() -> None:
    """worker2 frozen (as a host that stopped answering): `site.yml --limit` the broker and the
    client host runs to the end, says that worker2 did not answer, and the broker's firewall
    still admits worker2 (its address from the record of the last run that reached it), so
    that its nodes are back in the cluster once it answers again."""
    down, broker, client = WORKERS[-1], BROKERS[0], CLIENTS[0]
    address = ssh_endpoint(down)[0]
    rule = f'rule family="ipv4" source address="{address}/32" port port="{AMQP_PORT}" protocol="tcp" accept'
    assert rule in host(broker).check_output("firewall-cmd --list-rich-rules")
    docker("pause", down)
    try:
        rc, out = ansible_playbook("site.yml", "-i", INVENTORY, "--limit", f"{broker},{client}")
        assert rc == 0, out[-6000:]
        assert f"{down} did not answer" in out, out[-6000:]
        assert rule in host(broker).check_output("firewall-cmd --list-rich-rules")
        assert rule in host(broker).check_output("firewall-cmd --permanent --list-rich-rules")
    finally:
        docker("unpause", down)
    deadline = time.monotonic() + 120
    while True:
        status = host(FLOWERS[0]).run("celery -A downloaderApp status").stdout
        if all(node in status for node in expected_nodes()) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert all(node in status for node in expected_nodes()), status


def test_bad_input_stops_the_run_before_anything_changes() -> None:
    """A list given as a string, a number that is not one, and an IPv6 cluster address: each
    stops site.yml before its first play that changes a host (the facts play checks the
    addresses, the validation play the roles' inputs), with the variable and its value in the
    message, and nothing changed."""
    cases = {
        '{"flower_allowed_sources": "192.0.2.0/24"}': "flower_allowed_sources must be a list",
        '{"celery_worker_concurrency": "lots"}': "celery_worker_concurrency",
        '{"cluster_address": "2001:db8::1"}': "IPv6 is not supported",
    }
    for extra, message in cases.items():
        rc, out = ansible_playbook("site.yml", "-i", INVENTORY, "-e", extra)
        assert rc != 0, f"-e {extra} was accepted:\n{out[-3000:]}"
        assert message in out, f"-e {extra}:\n{out[-3000:]}"
        assert "PLAY [Run firewalld" not in out, f"-e {extra}: the run went on:\n{out[-3000:]}"
        for name, changed, *_ in RECAP.findall(out):
            assert changed == "0", f"-e {extra}: {name} changed:\n{out[-3000:]}"


def test_check_mode_on_a_new_inventory_says_to_converge_first(tmp_path: Path) -> None:
    """The scenario's inventory without its .secrets (a new inventory): --check stops at once
    and says to run site.yml once."""
    inventory = tmp_path / "inventory"
    shutil.copytree(Path(INVENTORY).parent, inventory, ignore=shutil.ignore_patterns(".secrets"))
    rc, out = ansible_playbook("site.yml", "-i", str(inventory / Path(INVENTORY).name), "--check")
    assert rc != 0, out[-3000:]
    assert "run site.yml once without --check first" in out, out[-3000:]


def test_a_drain_that_times_out_stops_nothing_and_says_how_to_resume() -> None:
    """remove-worker.yml with a drain_timeout of 5 s while worker2's node runs a 40-second
    download: the play fails for worker2, naming the node and the add_consumer command that
    takes it back; nothing is stopped there; that command makes it consume again."""
    busy = WORKERS[-1]
    node = f"{nodes_of(busy)[0]}@{short(busy)}"
    others = [w for w in WORKERS if w != busy]
    for worker in others:
        set_worker_nodes(worker, "stop")
    try:
        name = f"drain-{uuid.uuid4().hex[:6]}.bin"
        python(
            FLOWERS[0],
            f"from downloaderApp import download\ndownload.delay('http://{WEB}:8001/slow/40', {name!r})",
        )
        deadline = time.monotonic() + 30
        while (
            "downloaderApp.download"
            not in (active := host(busy).run(f"celery -A downloaderApp inspect active -d {node}").stdout)
            and time.monotonic() < deadline
        ):
            time.sleep(1)
        assert "downloaderApp.download" in active, active
        rc, out = ansible_playbook(
            "playbooks/remove-worker.yml", "-i", INVENTORY, "--limit", busy, "-e", "drain_timeout=5"
        )
        said = " ".join(out.split())
        assert rc != 0, out[-3000:]
        assert "did not drain within drain_timeout" in said and node in said, out[-3000:]
        assert "control add_consumer celery" in said, out[-3000:]
        unit = host(busy).service(worker_unit(busy, nodes_of(busy)[0]))
        assert unit.is_running and unit.is_enabled
        queues = host(busy).run(f"celery -A downloaderApp inspect active_queues -d {node}").stdout
        assert "celery" not in queues.split(node, 1)[-1], f"{node} still consumes: {queues}"
        resumed = host(busy).run(f"celery -A downloaderApp control add_consumer celery -d {node}")
        assert resumed.rc == 0, resumed.stdout + resumed.stderr
        queues = host(busy).run(f"celery -A downloaderApp inspect active_queues -d {node}").stdout
        assert "celery" in queues.split(node, 1)[-1], f"{node} does not consume again: {queues}"
    finally:
        for worker in others:
            set_worker_nodes(worker, "start")


def test_remove_worker_refuses_no_limit_and_every_worker_with_their_own_reasons() -> None:
    """Without --limit the playbook asks for one; with --limit naming every worker host it
    says that this would leave no worker (not that --limit is missing). Nothing is stopped."""
    rc, out = ansible_playbook("playbooks/remove-worker.yml", "-i", INVENTORY)
    said = " ".join(out.split())
    assert rc != 0, out[-3000:]
    assert "No --limit given" in said, out[-3000:]
    rc, out = ansible_playbook("playbooks/remove-worker.yml", "-i", INVENTORY, "--limit", ",".join(WORKERS))
    said = " ".join(out.split())
    assert rc != 0, out[-3000:]
    assert "names every worker host" in said and "No --limit given" not in said, out[-3000:]
    for worker in WORKERS:
        for node in nodes_of(worker):
            assert host(worker).service(worker_unit(worker, node)).is_running, f"{node} on {worker}"


def queues_of(worker: str) -> list[str]:
    return list(RUNNER.get_variables(worker).get("celery_worker_queues", []))


def test_remove_worker_refuses_the_last_host_of_a_queue_although_the_app_keeps_others() -> None:
    """The reports app's two hosts serve one queue each: --limit naming the one that consumes
    reports.slow is refused before anything changes (the app's other host stays, but would not
    run that queue's tasks), naming the queue and the host; its node keeps running."""
    slow = [w for w in OTHER_APP_WORKERS if queues_of(w) == ["reports.slow"]]
    assert len(slow) == 1 and len(OTHER_APP_WORKERS) > 1, OTHER_APP_WORKERS
    rc, out = ansible_playbook("playbooks/remove-worker.yml", "-i", INVENTORY, "--limit", slow[0])
    said = " ".join(out.split())
    assert rc != 0, out[-3000:]
    assert f"the queue reports.slow of the app reports ({slow[0]})" in said, out[-3000:]
    assert "names every worker host of the app" not in said, out[-3000:]
    assert "Stop consuming" not in out, out[-3000:]
    for node in nodes_of(slow[0]):
        assert host(slow[0]).service(worker_unit(slow[0], node)).is_running, f"{node} on {slow[0]}"
