"""Broker versions: the RabbitMQ and Erlang packages are held at the version installed, and a
run that asks for another version stops at the broker before anything changes there."""

from __future__ import annotations

import re

from celerylab import BROKERS, INVENTORY, ansible_playbook, host

INSTALLED = (
    "dpkg-query --show --showformat='${db:Status-Status} ${Package}\\n' rabbitmq-server 'erlang-*' "
    "2>/dev/null | awk '$1 == \"installed\" {print $2}'"
)


def version_of(broker: str) -> str:
    return host(broker).check_output("dpkg-query --show --showformat='${Version}' rabbitmq-server").strip()


def main_pid(broker: str) -> str:
    return host(broker).check_output("systemctl show --property MainPID --value rabbitmq-server").strip()


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
    upstream = re.sub(r"-[^-]*$", "", re.sub(r"^[0-9]+:", "", version))
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
