"""Broker versions: the RabbitMQ and Erlang packages are held at the version installed, and a
run that asks for another version stops at the broker before anything changes there;
playbooks/upgrade-brokers.yml refuses a hop RabbitMQ does not support or the package sources do
not offer, and changes nothing at the installed version."""

from __future__ import annotations

import re

from celerylab import BROKERS, INVENTORY, ansible_playbook, host, run_playbook

INSTALLED = (
    "dpkg-query --show --showformat='${db:Status-Status} ${Package}\\n' rabbitmq-server 'erlang-*' "
    "2>/dev/null | awk '$1 == \"installed\" {print $2}'"
)


def version_of(broker: str) -> str:
    return host(broker).check_output("dpkg-query --show --showformat='${Version}' rabbitmq-server").strip()


def upstream_of(version: str) -> str:
    """A Debian package version's upstream part: 3.10.8 of 3.10.8-1.1."""
    return re.sub(r"-[^-]*$", "", re.sub(r"^[0-9]+:", "", version))


def main_pid(broker: str) -> str:
    return host(broker).check_output("systemctl show --property MainPID --value rabbitmq-server").strip()


def refused_upgrade(wanted: str) -> tuple[str, str]:
    """upgrade-brokers.yml asked for WANTED: it fails saying that no broker was changed, and
    every broker keeps its package and its process. Its output with spaces collapsed, and as is."""
    before = {broker: (version_of(broker), main_pid(broker)) for broker in BROKERS}
    rc, out = ansible_playbook(
        "playbooks/upgrade-brokers.yml", "-i", INVENTORY, "-e", f"rabbitmq_version={wanted}"
    )
    said = " ".join(out.split())
    assert rc != 0, out[-4000:]
    assert "No broker was changed." in said, out[-4000:]
    assert {broker: (version_of(broker), main_pid(broker)) for broker in BROKERS} == before
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
    version, pid = version_of(broker), main_pid(broker)
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
    assert (version_of(broker), main_pid(broker)) == (version, pid)


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
    before = {broker: (version_of(broker), main_pid(broker)) for broker in BROKERS}
    out = run_playbook(
        "playbooks/upgrade-brokers.yml", "-i", INVENTORY, "-e", f"rabbitmq_version={installed}"
    )
    said = " ".join(out.split())
    for broker in BROKERS:
        assert f"{broker} already runs RabbitMQ {installed}: nothing to do." in said, out[-4000:]
    assert {broker: (version_of(broker), main_pid(broker)) for broker in BROKERS} == before
    for broker in BROKERS:
        assert "rabbitmq-server" in host(broker).check_output("apt-mark showhold").split()
