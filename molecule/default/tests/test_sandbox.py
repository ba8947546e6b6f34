"""The units' systemd sandbox: systemd's own rating, what a process under it may write, and
which networks a worker node may reach."""

from __future__ import annotations

import json
import re
import uuid

from celerylab import (
    ALL_FLOWERS,
    BROKERS,
    CLIENTS,
    CONNECT,
    OTHER_APP_FLOWERS,
    OTHER_APP_WORKERS,
    WEB,
    WORKERS,
    cluster_address_of,
    connect,
    flower_unit,
    host,
    nodes_of,
    probe,
    worker_unit,
)


def sandboxed_units() -> list[tuple[str, str]]:
    units = [(w, f"{worker_unit(w, n)}.service") for w in WORKERS for n in nodes_of(w)]
    # The reports app's scheduler (test_beat), on each of its worker hosts.
    units += [(w, "celery-beat-reports.service") for w in OTHER_APP_WORKERS]
    return units + [(f, f"{flower_unit(f)}.service") for f in ALL_FLOWERS]


def test_units_score_ok_or_better_in_systemd_analyze_security() -> None:
    """systemd's own rating of each unit's sandbox: OK (exposure below 5.0) or better."""
    for name, unit in sandboxed_units():
        result = host(name).run("systemd-analyze security --no-pager %s", unit)
        assert result.rc == 0, f"on {name}: {result.stderr}"
        match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
        assert match, f"on {name}: {result.stdout[-500:]}"
        assert match.group(2) in {"OK", "SAFE", "PERFECT"}, f"{unit} on {name}: {match.group(0)}"


def run_in_sandbox_of(name: str, unit: str, places: list[str]) -> dict[str, str]:
    """Start a oneshot copy of UNIT (same user, same sandbox) whose only command is
    probes/sandbox_probe.sh in PLACES; return what it printed for each place."""
    out = run_in_copy_of(name, unit, "/bin/sh", probe("sandbox_probe.sh"), places)
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def run_in_copy_of(name: str, unit: str, interpreter: str, script: str, args: list[str]) -> str:
    """Start a oneshot copy of UNIT (same user, same sandbox, same IP address filter) whose only
    command is INTERPRETER SCRIPT ARGS; return what it printed."""
    text = host(name).run("systemctl cat %s", unit)
    assert text.rc == 0, text.stderr
    skip = ("#", "ExecStart", "Type=", "Restart", "KillMode", "[Install]", "WantedBy")
    lines = [line for line in text.stdout.splitlines() if line and not line.startswith(skip)]
    unit_name = "sandbox-probe-" + uuid.uuid4().hex[:8]
    lines += [
        "Type=oneshot",
        f"StandardOutput=truncate:/run/{unit_name}.out",
        f"ExecStart={interpreter} /run/{unit_name}.script " + " ".join(args),
    ]
    files = {
        f"/run/{unit_name}.script": script,
        f"/run/systemd/system/{unit_name}.service": "\n".join(lines),
    }
    for path, content in files.items():
        written = host(name).run("printf '%%s\\n' %s > %s && chmod 0644 %s", content, path, path)
        assert written.rc == 0, written.stderr
    try:
        assert host(name).run("systemctl daemon-reload").rc == 0
        started = host(name).run("timeout 60 systemctl start %s", unit_name)
        assert started.rc == 0, f"on {name}: {started.stderr}"
        out = host(name).file(f"/run/{unit_name}.out").content_string
    finally:
        host(name).run("rm -f /run/%s.out %s %s; systemctl daemon-reload", unit_name, *files)
    return out


def test_the_units_sandbox_lets_a_process_write_the_download_directory_only() -> None:
    """A process under a unit's sandbox (as its user) writes the worker's download directory
    (the scheduler's: its state directory) and nothing else: the venv, /etc, /var/log and even
    the service user's own home are on a read-only file system."""
    for name, unit in sandboxed_units():
        worker = unit.startswith("celery-worker-")
        own_home = "/var/lib/celery" if worker else "/var/lib/flower"
        app = "reports" if name in OTHER_APP_FLOWERS else "downloader"
        read_only = [f"/opt/{app}/venv", "/etc", "/var/log", own_home]
        writable = ["/var/lib/downloader/files"] if worker else []
        if unit.startswith("celery-beat-"):
            # The scheduler writes its state directory only.
            read_only = ["/opt/reports/venv", "/etc", "/var/log", "/var/lib/celery"]
            writable = ["/var/lib/celery-beat-reports"]
        found = run_in_sandbox_of(name, unit, read_only + writable)
        for place in read_only:
            assert "Read-only file system" in found[place], f"{unit} on {name}: {place}: {found[place]}"
        for place in writable:
            assert found[place] == "written", f"{unit} on {name}: {place}: {found[place]}"


def test_a_worker_node_reaches_the_broker_and_the_web_but_no_denied_network() -> None:
    """The worker unit's IP address filter: its settings name the role's default networks
    (link-local, the clouds' metadata addresses), never sent anything here; and a process
    under a copy of the unit reaches the broker and the web host but not client1, which this
    scenario adds to the denied networks, while the worker host itself (outside the unit)
    still reaches client1: the unit drops the traffic, not a firewall."""
    worker, node = WORKERS[0], nodes_of(WORKERS[0])[0]
    unit = f"{worker_unit(worker, node)}.service"
    shown = host(worker).run("systemctl show --property=IPAddressDeny,IPAddressAllow %s", unit)
    assert shown.rc == 0, shown.stderr
    settings = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    for network in ("169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128"):
        assert network in settings["IPAddressDeny"].split(), settings
    assert f"{cluster_address_of(BROKERS[0])}/32" in settings["IPAddressAllow"].split(), settings

    broker = f"{cluster_address_of(BROKERS[0])}:5671"
    web = f"{cluster_address_of(WEB)}:22"
    targets = [broker, web]
    # The scenarios with a client host deny its address to the workers (el9 has none).
    clients = CLIENTS
    denied = f"{cluster_address_of(clients[0])}:22" if clients else ""
    if denied:
        targets.append(denied)
    reached = json.loads(run_in_copy_of(worker, unit, "/usr/bin/python3", CONNECT, targets))
    assert reached[broker] == "open" and reached[web] == "open", reached
    if clients:
        assert reached[denied] != "open" and not reached[denied].startswith("ConnectionRefusedError"), reached
        assert connect(worker, cluster_address_of(clients[0]), 22) == "open"
