"""The reports app's periodic task (its beat_schedule: tick every 4 s): both worker hosts of the
app run the unit celery-beat-reports, and one of them at a time, the holder of the lock queue on
the broker, runs the scheduler. Each tick is sent once per period cluster-wide; with the
scheduler's host shut down, or cut off from the broker, the other host takes over, and when the
host is back it waits.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable

from celerylab import (
    BROKERS,
    INVENTORY,
    OTHER_APP_WORKERS,
    cluster_address_of,
    config_env,
    docker,
    host,
    nodes_of,
    put_file,
    run_playbook,
    short,
    worker_unit,
)

PERIOD = 4.0
# What the lock program waits after it took the lock (roles/celery_worker/files/celery-beat-lock.py).
GRACE = 15.0
UNIT = "celery-beat-reports"
REPORTS_ENV = config_env("reports")
# The scheduler itself, not the lock program whose command line names it after `--`.
SCHEDULER = r"^\S+ /opt/reports/venv/bin/celery -A reportsApp beat"
# Drops a host's traffic to and from one address, silently, as a lost network does (the
# hosts have no nft command; firewalld's Python binding of libnftables is there).
CUT = "celerylab_cut"
NFT = """
import sys, nftables
nft = nftables.Nftables()
for command in sys.argv[1:]:
    rc, _, error = nft.cmd(command)
    assert rc == 0, (command, error)
"""
SENT = re.compile(r"^(\d+\.\d+) .*Sending due task tick \(reportsApp\.tick\)", re.M)


def schedulers() -> set[str]:
    """The reports hosts where a scheduler process runs now."""
    return {name for name in OTHER_APP_WORKERS if host(name).run("pgrep -f %s", SCHEDULER).rc == 0}


def sent(name: str, since: float) -> list[float]:
    """When NAME's scheduler sent tick, since SINCE (the hosts share the controller's clock)."""
    out = (
        host(name)
        .run("journalctl --no-pager -q -o short-unix -u %s --since @%s", UNIT, str(int(since)))
        .stdout
    )
    return [t for t in (float(m) for m in SENT.findall(out)) if t >= since]


def wait_for(what: str, check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(1)


def assert_once_per_period(times: list[float], at_least: int) -> None:
    """Never two ticks closer than half a period (two schedulers would be), none missed."""
    assert len(times) >= at_least, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(PERIOD / 2 <= gap <= PERIOD * 1.5 for gap in gaps), gaps


def until_only(name: str, since: float) -> list[tuple[float, set[str]]]:
    """Sample the schedulers every second until NAME alone runs one (at most 2 minutes):
    never two at once. The samples, at their seconds after SINCE."""
    seen: list[tuple[float, set[str]]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = schedulers()
        seen.append((round(time.time() - since, 1), now))
        assert len(now) <= 1, seen
        if now == {name}:
            return seen
        time.sleep(1)
    raise AssertionError(f"{name} runs no scheduler: {seen}")


def the_holder() -> str:
    wait_for("one scheduler runs", lambda: len(schedulers()) == 1, 60)
    (holder,) = schedulers()
    return holder


def test_one_scheduler_sends_the_tick_once_per_period() -> None:
    """Both hosts run the unit; one runs the scheduler, the other waits for the lock. Over 14 s
    the holder sends tick once every 4 s, the other host sends nothing, and reports1 (the
    queue reports.fast) runs the ticks."""
    for name in OTHER_APP_WORKERS:
        assert host(name).service(UNIT).is_running, name
        assert host(name).service(UNIT).is_enabled, name
    holder = the_holder()
    since = time.time()
    time.sleep(PERIOD * 3.5)
    assert schedulers() == {holder}
    assert_once_per_period(sent(holder, since), 3)
    for name in OTHER_APP_WORKERS:
        if name != holder:
            assert sent(name, since) == [], name
            assert waiting(name, 0), name
    fast = sorted(OTHER_APP_WORKERS)[0]
    unit = worker_unit(fast, "reports1")
    ran = host(fast).run(f"journalctl --no-pager -q -u {unit} -g %s", r"reportsApp.tick\[.*\] succeeded")
    assert ran.stdout.strip(), "reports1 ran no tick"


def test_limited_runs_that_restart_the_holders_scheduler_never_run_two() -> None:
    """site.yml limited to the lock holder with another log level for the app's units (its
    worker nodes and its scheduler's unit restart), then limited to it again with the
    scenario's settings (they restart once more): sampled every second during both runs and
    until one scheduler runs again, there never are two; then tick comes once per period."""
    holder = the_holder()
    invocation = f"systemctl show -p InvocationID --value {UNIT}"
    before = host(holder).check_output(invocation)
    samples: list[tuple[float, set[str]]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((round(time.time(), 1), schedulers()))
            done.wait(1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    run = ["site.yml", "-i", INVENTORY, "--limit", holder, "--tags", "celery_worker"]
    try:
        try:
            run_playbook(*run, "-e", "celery_worker_log_level=DEBUG")
            changed = host(holder).check_output(invocation)
            assert changed != before, f"{UNIT} did not restart on {holder}"
        finally:
            run_playbook(*run)  # the scenario's settings again
        assert host(holder).check_output(invocation) != changed, f"{UNIT} did not restart again"
        wait_for("one scheduler runs again", lambda: len(schedulers()) == 1, 90)
    finally:
        done.set()
        sampler.join(timeout=60)
    assert all(len(now) <= 1 for _, now in samples), [s for s in samples if len(s[1]) > 1]
    (now,) = schedulers()
    since = time.time()
    time.sleep(PERIOD * 3.5)
    assert_once_per_period(sent(now, since), 3)


def test_the_scheduler_fails_over_when_its_host_is_shut_down() -> None:
    """The holder's host shut down (`systemctl poweroff`, its container stops): sampled every
    second, there never are two schedulers; the other host's starts no sooner than the lock's
    grace after the shutdown began and sends tick once per period. The host started again waits
    for the lock: the tick keeps coming from the other host only."""
    holder = the_holder()
    (other,) = [name for name in OTHER_APP_WORKERS if name != holder]
    # Docker writes both anew when a container starts; they are molecule/shared/prepare.yml's.
    kept = {path: host(holder).file(path).content for path in ("/etc/hosts", "/etc/resolv.conf")}
    stopped_at = time.time()
    before = sent(holder, stopped_at - PERIOD * 3)
    docker("exec", holder, "systemctl", "poweroff")
    try:
        seen = until_only(other, stopped_at)
        wait_for(f"{holder} is down", lambda: not running(holder), 90)
        taken_at = time.time()
        time.sleep(PERIOD * 3.5)
        after = sent(other, stopped_at - PERIOD * 3)
        # None before the holder let the lock go, and the grace waited after that.
        assert after and after[0] >= stopped_at + GRACE, (before, after, seen)
        assert before, before
        assert_once_per_period(after, 3)
    finally:
        docker("start", holder)
        wait_for(f"{holder} is back", lambda: booted(holder), 120)
        for path, content in kept.items():
            put_file(holder, path, content)
    wait_for(f"{holder} waits for the lock", lambda: bool(waiting(holder, stopped_at)), 90)
    back_at = time.time()
    time.sleep(PERIOD * 2.5)
    assert schedulers() == {other}
    assert sent(holder, back_at) == []
    assert_once_per_period(sent(other, taken_at), 5)


def running(name: str) -> bool:
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True, timeout=30
    )
    return state.stdout.strip() == "true"


def booted(name: str) -> bool:
    """NAME's systemd finished starting its units (running, or degraded)."""
    return host(name).run("systemctl is-system-running --wait").rc in (0, 1)


def journal(name: str, since: float, pattern: str) -> str:
    """NAME's scheduler unit's lines since SINCE that match PATTERN."""
    out = host(name).run("journalctl --no-pager -q -u %s --since @%s -g %s", UNIT, str(int(since)), pattern)
    return str(out.stdout)


def waiting(name: str, since: float) -> str:
    return journal(name, since, "another host runs")


def cut_off(name: str, address: str) -> None:
    commands = [
        f"add table inet {CUT}",
        f"add chain inet {CUT} out {{ type filter hook output priority -10 ; }}",
        f"add chain inet {CUT} in {{ type filter hook input priority -10 ; }}",
        f"add rule inet {CUT} out ip daddr {address} drop",
        f"add rule inet {CUT} in ip saddr {address} drop",
    ]
    result = host(name).run("python3 -c %s " + " ".join(["%s"] * len(commands)), NFT, *commands)
    assert result.rc == 0, result.stdout + result.stderr


def reconnect(name: str) -> None:
    result = host(name).run("python3 -c %s %s", NFT, f"delete table inet {CUT}")
    assert result.rc == 0, result.stdout + result.stderr


def test_a_holder_cut_off_from_the_broker_stops_its_scheduler_before_another_starts() -> None:
    """The holder's traffic to and from the broker dropped (no FIN, no answer: a lost network):
    its lock program finds the connection lost and stops its scheduler (its journal says so),
    the broker frees the lock after the heartbeat, and the other host starts its scheduler
    after the grace. Sampled every second, at no time do both hosts run one. With
    the network back, the host waits for the lock."""
    holder = the_holder()
    (other,) = [name for name in OTHER_APP_WORKERS if name != holder]
    cut_at = time.time()
    cut_off(holder, cluster_address_of(BROKERS[0]))
    try:
        seen = until_only(other, cut_at)
        # The lock was the holder's until the cut at least, and the grace came after that.
        assert seen[-1][0] >= GRACE, seen
        # Its lock program found the connection lost (py-amqp's socket gives up on unanswered
        # data within seconds; the lease is the bound when nothing fails at all).
        assert journal(holder, cut_at, "broker: |no answer from the broker"), seen
    finally:
        reconnect(holder)
    wait_for(f"{holder} waits for the lock", lambda: bool(waiting(holder, cut_at)), 90)
    assert schedulers() == {other}
    # Its worker node serves again: reconnected, or started again by systemd once when the
    # broker still held the node's remote-control queue for the lost connection
    # (RESOURCE_LOCKED), which is what the next tests would otherwise meet.
    wait_until_its_nodes_answer(holder)


def wait_until_its_nodes_answer(name: str) -> None:
    ping = f"env {REPORTS_ENV} /opt/reports/venv/bin/celery -A reportsApp inspect ping --timeout 5 -d"
    for node in nodes_of(name):
        node_name = f"{node}@{short(name)}"
        wait_for(f"{node_name} answers", lambda n=node_name: host(name).run(f"{ping} {n}").rc == 0, 120)


def test_removing_the_holder_stops_its_scheduler_and_the_other_host_takes_over() -> None:
    """The lock holder removed as remove-worker.yml's refusal says to: the other reports host
    first given every queue of the app (celery_worker_queues [], site.yml limited to it), then
    remove-worker.yml --limit the holder stops and disables the holder's node and its
    scheduler unit; the other host's scheduler takes the lock (never two at once) and sends
    tick once per period, and its node runs them. site.yml with the scenario's settings then
    puts both hosts back as they were, and one scheduler runs again."""
    holder = the_holder()
    (other,) = [name for name in OTHER_APP_WORKERS if name != holder]
    # For every host of the run: site.yml is limited to `other`, and remove-worker reads it for
    # its check that a queue keeps a consumer, which `other` now is for both.
    every_queue = ("-e", json.dumps({"celery_worker_queues": []}))
    tags = ("--tags", "celery_app,celery_worker")
    run_playbook("site.yml", "-i", INVENTORY, "--limit", other, *tags, *every_queue)
    try:
        removed_at = time.time()
        run_playbook("playbooks/remove-worker.yml", "-i", INVENTORY, "--limit", holder, *every_queue)
        units = [UNIT] + [worker_unit(holder, node) for node in nodes_of(holder)]
        for unit in units:
            assert not host(holder).service(unit).is_running, unit
            assert not host(holder).service(unit).is_enabled, unit
        until_only(other, removed_at)
        taken_at = time.time()
        time.sleep(PERIOD * 3.5)
        assert_once_per_period(sent(other, taken_at), 3)
        ran = host(other).run(
            "journalctl --no-pager -q --since @%s -u %s -g %s",
            str(int(taken_at)),
            worker_unit(other, nodes_of(other)[0]),
            r"reportsApp.tick\[.*\] succeeded",
        )
        assert ran.stdout.strip(), f"{other} ran no tick"
    finally:
        run_playbook("site.yml", "-i", INVENTORY, "--limit", f"{holder},{other}", *tags)
    assert host(holder).service(UNIT).is_enabled and host(holder).service(UNIT).is_running
    wait_until_its_nodes_answer(holder)
    # Both scheduler units restarted (the other host's settings changed back): one of them
    # takes the lock again.
    wait_for("one scheduler runs again", lambda: len(schedulers()) == 1, 90)
