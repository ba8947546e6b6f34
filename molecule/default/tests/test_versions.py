"""Broker versions: the RabbitMQ and Erlang packages are held at the version installed, and a
run that asks for another version stops at the broker before anything changes there;
playbooks/upgrade-brokers.yml refuses a hop RabbitMQ does not support or the package sources do
not offer, changes nothing at the installed version, and leaves a broker whose new package
fails to install running at its old version, held, out of maintenance."""

from __future__ import annotations

import json
import re
import time

from celerylab import BROKERS, INVENTORY, ansible_playbook, host, main_pid, probe, run_playbook

INSTALLED = (
    "dpkg-query --show --showformat='${db:Status-Status} ${Package}\\n' rabbitmq-server 'erlang-*' "
    "2>/dev/null | awk '$1 == \"installed\" {print $2}'"
)


def version_of(broker: str) -> str:
    return host(broker).check_output("dpkg-query --show --showformat='${Version}' rabbitmq-server").strip()


def upstream_of(version: str) -> str:
    """A Debian package version's upstream part: 3.10.8 of 3.10.8-1.1."""
    return re.sub(r"-[^-]*$", "", re.sub(r"^[0-9]+:", "", version))


def broker_pid(broker: str) -> int:
    return main_pid(broker, "rabbitmq-server")


def refused_upgrade(wanted: str) -> tuple[str, str]:
    """upgrade-brokers.yml asked for WANTED: it fails saying that no broker was changed, and
    every broker keeps its package and its process. Its output with spaces collapsed, and as is."""
    before = {broker: (version_of(broker), broker_pid(broker)) for broker in BROKERS}
    rc, out = ansible_playbook(
        "playbooks/upgrade-brokers.yml", "-i", INVENTORY, "-e", f"rabbitmq_version={wanted}"
    )
    said = " ".join(out.split())
    assert rc != 0, out[-4000:]
    assert "No broker was changed." in said, out[-4000:]
    assert {broker: (version_of(broker), broker_pid(broker)) for broker in BROKERS} == before
    return said, out


def test_the_rabbitmq_and_erlang_packages_are_held() -> None:
    """Every installed rabbitmq-server and erlang-* package is on hold (`apt-mark showhold`),
    so that `apt-get upgrade` and unattended upgrades keep their version."""
    for broker in BROKERS:
        installed = set(host(broker).check_output(INSTALLED).split())
        assert {"rabbitmq-server", "erlang-base"} <= installed, (broker, installed)
        held = set(host(broker).check_output("apt-mark showhold").split())
        assert installed <= held, (broker, sorted(installed - held))
        selection = host(broker).check_output("dpkg --get-selections rabbitmq-server").split()
        assert selection == ["rabbitmq-server", "hold"], (broker, selection)


def test_another_rabbitmq_version_stops_the_run_at_the_broker() -> None:
    """`-e rabbitmq_version=0.0.1` on a converged broker: the run fails there, naming the
    installed version and the one asked for; the package and the running broker are as before."""
    broker = BROKERS[0]
    version, pid = version_of(broker), broker_pid(broker)
    upstream = upstream_of(version)
    rc, out = ansible_playbook(
        "site.yml",
        "-i",
        INVENTORY,
        "--limit",
        broker,
        "--tags",
        "rabbitmq_install",
        "-e",
        "rabbitmq_version=0.0.1",
    )
    assert rc != 0, out[-4000:]
    said = " ".join(out.split())
    assert f"runs RabbitMQ {upstream}, but rabbitmq_version is 0.0.1" in said, out[-4000:]
    assert "site.yml never upgrades or downgrades a running broker" in said, out[-4000:]
    assert (version_of(broker), broker_pid(broker)) == (version, pid)


def test_upgrade_brokers_refuses_a_hop_that_rabbitmq_does_not_support() -> None:
    """playbooks/upgrade-brokers.yml asked to take Debian 12's RabbitMQ 3.10 to Debian 13's 4.0
    (on Debian 13's 4.0: back to 3.10) fails before any broker changes, naming the series
    between them (or the downgrade); every broker keeps its package and its process."""
    installed = upstream_of(version_of(BROKERS[0]))
    wanted, reason = (
        ("4.0.5", "3.10 -> 3.11 -> 3.12 -> 3.13 -> 4.0")
        if installed.startswith("3.")
        else ("3.10.8", "it is a downgrade")
    )
    said, out = refused_upgrade(wanted)
    assert f"RabbitMQ {installed} to {wanted} is not a supported upgrade" in said, out[-4000:]
    assert reason in said, out[-4000:]


def test_upgrade_brokers_refuses_a_version_that_the_package_sources_do_not_offer() -> None:
    """A supported hop (the next patch release of the installed series) that Debian's sources do
    not carry: upgrade-brokers.yml fails before any broker stops, naming the version asked for
    and the ones apt offers; every broker keeps its package and its process."""
    installed = upstream_of(version_of(BROKERS[0]))
    wanted = re.sub(r"[0-9]+$", "999", installed)
    said, out = refused_upgrade(wanted)
    assert f"its package sources do not offer RabbitMQ {wanted} (they offer " in said, out[-4000:]
    assert f"{installed}" in said.split(f"do not offer RabbitMQ {wanted}", 1)[1], out[-4000:]


def test_upgrade_brokers_at_the_installed_version_changes_nothing() -> None:
    """upgrade-brokers.yml with rabbitmq_version the installed version: it succeeds, says of each
    broker that it already runs that version, and restarts none; the packages stay held."""
    installed = upstream_of(version_of(BROKERS[0]))
    before = {broker: (version_of(broker), broker_pid(broker)) for broker in BROKERS}
    out = run_playbook(
        "playbooks/upgrade-brokers.yml", "-i", INVENTORY, "-e", f"rabbitmq_version={installed}"
    )
    said = " ".join(out.split())
    for broker in BROKERS:
        assert f"{broker} already runs RabbitMQ {installed}: nothing to do." in said, out[-4000:]
    assert {broker: (version_of(broker), broker_pid(broker)) for broker in BROKERS} == before
    for broker in BROKERS:
        assert "rabbitmq-server" in host(broker).check_output("apt-mark showhold").split()


def test_an_upgrade_whose_package_fails_leaves_the_broker_running_held_and_in_service() -> None:
    """The next patch release, offered by a repository added on each broker just before the run
    (a local one whose package fails in its preinst, before dpkg replaces a file): the upgrade
    passes its checks, stops the first broker and fails at its package install. The rescue
    holds the installed packages again and starts and revives the node: the run fails saying
    that the node was not upgraded; that broker runs a new process at its old version, held,
    not under maintenance, its cluster whole again; no other broker was touched."""
    version = version_of(BROKERS[0])
    installed = upstream_of(version)
    wanted = re.sub(r"[0-9]+$", lambda last: str(int(last.group()) + 1), installed)
    repo = probe("failing_rabbitmq_repo.sh")
    before = {broker: (version_of(broker), broker_pid(broker)) for broker in BROKERS}
    try:
        for broker in BROKERS:
            host(broker).check_output("sh -c %s repo add %s", repo, f"{wanted}-1")
        rc, out = ansible_playbook(
            "playbooks/upgrade-brokers.yml", "-i", INVENTORY, "-e", f"rabbitmq_version={wanted}"
        )
    finally:
        for broker in BROKERS:
            host(broker).run("sh -c %s repo remove", repo)
    said = " ".join(out.split())
    assert rc != 0, out[-4000:]
    stopped = [broker for broker in BROKERS if broker_pid(broker) != before[broker][1]]
    assert len(stopped) == 1, (stopped, out[-4000:])
    broker = stopped[0]
    assert f"was not upgraded to {wanted}" in said, out[-4000:]
    assert f"install 'rabbitmq-server={wanted}-1'' failed" in said, out[-4000:]
    assert "/usr/bin/dpkg returned an error code (1)" in said, out[-4000:]
    assert "Its packages are held at the version now installed" in said, out[-4000:]
    assert {b: (version_of(b), broker_pid(b)) for b in BROKERS if b != broker} == {
        b: before[b] for b in BROKERS if b != broker
    }
    assert version_of(broker) == version
    status_of = "dpkg-query --show --showformat='${db:Status-Abbrev}' rabbitmq-server"
    assert host(broker).check_output(status_of).strip() == "hi", "the package is not installed and held"
    assert "rabbitmq-server" in host(broker).check_output("apt-mark showhold").split()
    nodes = {f"rabbit@{host(b).check_output('hostname -s').strip()}" for b in BROKERS}
    status: dict[str, object] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        result = host(broker).run("rabbitmqctl cluster_status --formatter json")
        status = json.loads(result.stdout) if result.rc == 0 else {}
        if set(status.get("running_nodes", [])) == nodes:
            break
        time.sleep(3)
    assert set(status.get("running_nodes", [])) == nodes, status
    node = f"rabbit@{host(broker).check_output('hostname -s').strip()}"
    maintenance = status["maintenance_status"]
    assert isinstance(maintenance, dict) and maintenance[node] == "not under maintenance", status
