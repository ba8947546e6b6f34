"""Prometheus on the monitoring host: every host of the inventory scraped over verified HTTPS,
the metrics ports closed to every other host, and each alert rule made to fire by causing its
condition for real (worker nodes stopped with tasks queued, a broker's disk alarm, failing
tasks, a broker stopped) and seen to clear once the condition is undone.

The scenario shortens the scrape and evaluation intervals and the alerts' `for` to 5 s
(molecule.yml); every wait below is bounded. The broker is stopped last: with the
scenario's single broker, the whole cluster waits for it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celerylab import (
    ALL_FLOWERS,
    ALL_WORKERS,
    BROKERS,
    FLOWER_PORT,
    FLOWER_URL,
    FLOWERS,
    OTHER_APP_FLOWERS,
    RUNNER,
    WEB,
    WORKERS,
    connections,
    expected_nodes,
    flower_async_apply_download,
    host,
    http,
    probe,
    python,
    set_worker_nodes,
)

MONITORS = RUNNER.get_hosts("monitoring")
MONITOR = MONITORS[0]
PROMETHEUS_PORT = 9090
RABBITMQ_METRICS_PORT = 15691
NODE_EXPORTER_PORT = 9100
PROMETHEUS_CA = "/etc/prometheus/cluster-ca.crt"  # the cluster's CA, on the monitoring host
DOWNLOADS = "/var/lib/downloader/files"
# Time for an alert to fire or clear: a scrape (5 s), an evaluation (5 s), the `for` (5 s),
# with room for a loaded machine.
ALERT_WAIT = 120


def prometheus(path: str) -> object:
    result = host(MONITOR).run("python3 -c %s %s %s", probe("prometheus_api.py"), str(PROMETHEUS_PORT), path)
    assert result.rc == 0, f"{result.stdout}\n{result.stderr}"
    answer = json.loads(result.stdout)
    assert answer["status"] == "success", answer
    return answer["data"]


def alerts(name: str) -> list[dict[str, object]]:
    """The active (pending or firing) alerts of rule NAME."""
    data = prometheus("alerts")
    assert isinstance(data, dict)
    return [a for a in data["alerts"] if a["labels"]["alertname"] == name]


def wait_until(what: str, check: Callable[[], object], timeout: float = ALERT_WAIT) -> object:
    """Call CHECK every 3 s until it returns something true; fail with WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(3)


def firing(name: str, **labels: str) -> list[dict[str, object]]:
    return [
        a
        for a in alerts(name)
        if a["state"] == "firing" and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def wait_firing(name: str, **labels: str) -> list[dict[str, object]]:
    found = wait_until(f"{name} {labels} firing", lambda: firing(name, **labels))
    assert isinstance(found, list)
    return found


def wait_cleared(name: str) -> None:
    wait_until(f"{name} cleared (no longer pending or firing)", lambda: not alerts(name))


def test_monitoring_services_are_active_and_enabled() -> None:
    units = [(m, "prometheus") for m in MONITORS] + [(m, "firewalld") for m in MONITORS]
    units += [(h, "prometheus-node-exporter") for h in {*BROKERS, *ALL_WORKERS, *ALL_FLOWERS, *MONITORS}]
    for name, unit in units:
        service = host(name).service(unit)
        assert service.is_running, f"{unit} is not running on {name}"
        assert service.is_enabled, f"{unit} is not enabled on {name}"


def test_prometheus_scrapes_every_host_of_the_inventory() -> None:
    """One target per broker (RabbitMQ's plugin), per Flower host of every app (labelled with
    its app), and per host of the cluster (node exporter), every one up: scraped over HTTPS, the
    certificate verified."""
    expected = (
        {("rabbitmq", b) for b in BROKERS}
        | {("flower", f) for f in ALL_FLOWERS}
        | {("node", h) for h in {*BROKERS, *ALL_WORKERS, *ALL_FLOWERS, *MONITORS}}
    )

    def active() -> list[dict[str, Any]]:
        data = prometheus("targets?state=active")
        assert isinstance(data, dict)
        return list(data["activeTargets"])

    def health(targets: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
        return {
            (t["labels"]["job"], t["labels"]["instance"]): f"{t['health']} {t['lastError']}" for t in targets
        }

    def all_up() -> bool:
        seen = health(active())
        return set(seen) == expected and all(v.startswith("up") for v in seen.values())

    wait_until("every target up", all_up, timeout=60)
    targets = active()
    seen = health(targets)
    assert set(seen) == expected
    assert all(v.startswith("up") for v in seen.values()), seen
    assert ("node", WEB) not in seen  # a host outside the cluster's groups is not scraped
    apps = {
        t["labels"]["instance"]: t["labels"].get("app") for t in targets if t["labels"]["job"] == "flower"
    }
    assert apps == {f: "reports" if f in OTHER_APP_FLOWERS else "downloader" for f in ALL_FLOWERS}


def test_metrics_ports_answer_the_monitoring_hosts_only() -> None:
    # worker2 is in no allow-list of these ports (worker1 is one of Flower's sources).
    outsider = WORKERS[1]
    allowed = [
        *((MONITOR, broker, RABBITMQ_METRICS_PORT) for broker in BROKERS),
        *(
            (MONITOR, cluster_host, NODE_EXPORTER_PORT)
            for cluster_host in {*BROKERS, *ALL_WORKERS, *ALL_FLOWERS}
        ),
        *((MONITOR, flower, FLOWER_PORT) for flower in ALL_FLOWERS),
    ]
    dropped = [
        *((outsider, broker, RABBITMQ_METRICS_PORT) for broker in BROKERS),
        *((outsider, other, NODE_EXPORTER_PORT) for other in {*BROKERS, *WORKERS[:1], *FLOWERS}),
        # Prometheus's own port: no allowed sources in this scenario.
        (outsider, MONITOR, PROMETHEUS_PORT),
    ]
    outcome = connections([*allowed, *dropped])
    for attempt in allowed:
        assert outcome[attempt] == "open", attempt
    for attempt in dropped:
        assert outcome[attempt].startswith("TimeoutError"), (attempt, outcome[attempt])


def test_metrics_are_served_over_verified_https() -> None:
    status, body = http(
        MONITOR, "GET", f"https://{BROKERS[0]}:{RABBITMQ_METRICS_PORT}/metrics", cafile=PROMETHEUS_CA
    )
    assert status == 200 and "rabbitmq_identity_info" in body
    status, body = http(
        MONITOR, "GET", f"https://{WORKERS[0]}:{NODE_EXPORTER_PORT}/metrics", cafile=PROMETHEUS_CA
    )
    assert status == 200 and "node_cpu_seconds_total" in body
    # Flower serves /metrics without its login (only the firewall guards it), its UI with it.
    status, body = http(MONITOR, "GET", f"{FLOWER_URL}/metrics", cafile=PROMETHEUS_CA)
    assert status == 200 and "flower_worker_online" in body
    assert http(MONITOR, "GET", f"{FLOWER_URL}/workers", cafile=PROMETHEUS_CA)[0] == 401


@pytest.fixture
def workers_stopped() -> Iterator[None]:
    """Every worker node stopped; started again at teardown too, should the test fail midway."""
    for worker in WORKERS:
        set_worker_nodes(worker, "stop")
    try:
        yield
    finally:
        for worker in WORKERS:
            set_worker_nodes(worker, "start")


def test_stopped_workers_and_unconsumed_queue_fire_and_clear(workers_stopped: None) -> None:
    """Every worker node stopped, then downloads submitted through Flower's API: Flower sees
    each node go, and the app's queue holds the tasks with no consumer. Both alerts fire; with
    the nodes started again the tasks run and both clear."""
    names = [f"queued-{uuid.uuid4().hex[:8]}.bin" for _ in range(3)]
    for name in names:
        flower_async_apply_download(WORKERS[0], name)
    for node in sorted(expected_nodes()):
        wait_firing("CeleryWorkerGone", worker=node)
    queued = wait_firing("CeleryQueueWithoutConsumers", vhost="downloader", queue="celery")
    assert all(float(str(a["value"])) >= 1 for a in queued), queued

    for worker in WORKERS:
        set_worker_nodes(worker, "start")
    wait_cleared("CeleryQueueWithoutConsumers")
    wait_cleared("CeleryWorkerGone")
    # Nothing was lost while nobody consumed: each download is on one worker host.
    for name in names:
        wait_until(
            f"{name} downloaded",
            lambda name=name: any(host(w).file(f"{DOWNLOADS}/{name}").exists for w in WORKERS),
            timeout=60,
        )


def disk_free_limit(broker: str) -> str:
    conf = host(broker).file("/etc/rabbitmq/rabbitmq.conf").content_string
    match = re.search(r"^disk_free_limit\.absolute = (\S+)$", conf, re.MULTILINE)
    assert match, "no disk_free_limit.absolute in rabbitmq.conf"
    return match.group(1)


def rabbitmqctl(broker: str, *args: str) -> None:
    result = host(broker).run("rabbitmqctl " + " ".join(["%s"] * len(args)), *args)
    assert result.rc == 0, f"{result.stdout}\n{result.stderr}"


def test_a_broker_disk_alarm_fires_and_clears() -> None:
    """A free-disk limit above any real disk raises the broker's disk alarm (publishers
    blocked); the configured limit back, the alarm and the alert clear."""
    broker = BROKERS[0]
    configured = disk_free_limit(broker)
    rabbitmqctl(broker, "set_disk_free_limit", "1000000GB")
    try:
        wait_firing("RabbitMQResourceAlarm", instance=broker, alarm="disk")
    finally:
        rabbitmqctl(broker, "set_disk_free_limit", configured)
    wait_cleared("RabbitMQResourceAlarm")


def fail_downloads(count: int) -> None:
    """COUNT downloads of a page that does not exist, sent with the tutorial's client code: each
    fails for good (HTTP 404 is not retried)."""
    missing = f"http://{WEB}:8000/missing-{uuid.uuid4().hex[:8]}.bin"
    code = (
        "from downloaderApp import download\n"
        f"results = [download.delay({missing!r}, 'missing-%d.bin' % i) for i in range({count})]\n"
        "for r in results:\n"
        "    r.get(timeout=60, propagate=False)\n"
        "print(sum(r.failed() for r in results))\n"
    )
    assert python(FLOWERS[0], code).strip().splitlines()[-1] == str(count)


def test_failing_tasks_fire_the_failure_rate_alert_and_it_clears() -> None:
    """A burst of failures is above the failure rate; once the window has passed without
    failures, the alert clears. Two bursts, two scrapes apart: Prometheus counts no increase
    into a counter's first sample, so on a fresh cluster the first failures of each worker
    node only make Flower's counter exist (as in production: a lasting failure rate fires)."""
    fail_downloads(6)
    time.sleep(12)
    fail_downloads(12)
    wait_firing("CeleryTaskFailures", task="downloaderApp.download")
    wait_cleared("CeleryTaskFailures")


def test_a_stopped_broker_fires_node_down_and_it_clears() -> None:
    broker = BROKERS[0]
    result = host(broker).run("systemctl stop rabbitmq-server")
    assert result.rc == 0, result.stderr
    try:
        wait_firing("RabbitMQNodeDown", instance=broker)
    finally:
        result = host(broker).run("systemctl start rabbitmq-server")
        assert result.rc == 0, result.stderr
    wait_cleared("RabbitMQNodeDown")
    # The workers and Flower find the broker again by themselves.
    wait_until("every worker node back in `celery status`", status_lists_every_node)


def status_lists_every_node() -> bool:
    out = host(FLOWERS[0]).run("celery -A downloaderApp status").stdout
    return set(re.findall(r"->\s+(\S+@\S+):\s+OK", out)) == expected_nodes()
