"""The services run, and the tutorial's usage works: celery status and inspect, download and list,
the app's venv from its own wheelhouse, and the broker's log after the traffic."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from celerylab import (
    ALL_FLOWERS,
    ALL_WORKERS,
    AMQP_PORT,
    BROKERS,
    CLUSTER,
    FLOWER_PORT,
    FLOWERS,
    MANAGEMENT_PORT,
    PROJECT,
    SAMPLE_URL,
    WORKERS,
    expected_nodes,
    flower_unit,
    host,
    inventory_name,
    nodes_of,
    python,
    set_worker_nodes,
    status_nodes,
    tutorial_download,
    tutorial_list,
    worker_unit,
)


def test_every_service_is_active_and_enabled() -> None:
    units = [(b, "rabbitmq-server") for b in BROKERS]
    units += [(w, worker_unit(w, n)) for w in ALL_WORKERS for n in nodes_of(w)]
    units += [(f, flower_unit(f)) for f in ALL_FLOWERS]
    units += [(h, "firewalld") for h in CLUSTER]
    for name, unit in units:
        service = host(name).service(unit)
        assert service.is_running, f"{unit} is not running on {name}"
        assert service.is_enabled, f"{unit} is not enabled on {name}"


def test_ports_are_listening() -> None:
    for broker in BROKERS:
        assert host(broker).socket(f"tcp://0.0.0.0:{AMQP_PORT}").is_listening
        assert host(broker).socket(f"tcp://0.0.0.0:{MANAGEMENT_PORT}").is_listening
    for flower in FLOWERS:
        assert host(flower).socket(f"tcp://0.0.0.0:{FLOWER_PORT}").is_listening


def test_celery_status_lists_every_node_of_every_worker_host() -> None:
    deadline = time.monotonic() + 60
    while True:
        out = host(FLOWERS[0]).run("celery -A downloaderApp status").stdout
        seen = status_nodes(out)
        if seen >= expected_nodes() or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert seen == expected_nodes(), out


def test_tutorial_inspect_commands_answer() -> None:
    for sub in ("active", "stats"):
        result = host(FLOWERS[0]).run(f"celery -A downloaderApp inspect {sub} --timeout 5")
        assert result.rc == 0, result.stdout + result.stderr
        for node in expected_nodes():
            assert node in result.stdout, f"{node} missing from inspect {sub}:\n{result.stdout}"


@pytest.fixture(scope="module")
def downloaded(sample_sha256: str) -> dict[str, object]:
    name = f"sample-{uuid.uuid4().hex[:8]}.bin"
    record = tutorial_download(FLOWERS[0], name)
    record["requested_name"] = name
    return record


def test_download_writes_the_same_bytes_on_a_worker(
    downloaded: dict[str, object], sample_sha256: str
) -> None:
    assert downloaded["host"] in WORKERS
    on_disk = host(str(downloaded["host"])).file(str(downloaded["path"]))
    assert on_disk.exists
    assert on_disk.sha256sum == sample_sha256
    assert downloaded["sha256"] == sample_sha256
    assert on_disk.user == "celery"


def test_a_second_copy_of_one_task_succeeds_and_the_file_names_its_task(sample_sha256: str) -> None:
    """One task id sent twice (as a publish retried after a broker stop can store it): both
    runs succeed under the worker's sandbox, and the file carries that task id (its extended
    attribute), which is how the second run knows the file is its own."""
    name, task_id = f"twice-{uuid.uuid4().hex[:8]}.bin", str(uuid.uuid4())
    code = (
        "import json\n"
        "from downloaderApp import download\n"
        f"runs = [download.apply_async(({SAMPLE_URL!r}, {name!r}), task_id={task_id!r}).get(timeout=60)"
        " for _ in range(2)]\n"
        "print(json.dumps(runs))\n"
    )
    runs = json.loads(python(FLOWERS[0], code).strip().splitlines()[-1])
    assert [r["sha256"] for r in runs] == [sample_sha256] * 2, runs
    holder = inventory_name(runs[-1]["host"])
    read = "import os, sys; print(os.getxattr(sys.argv[1], 'user.downloader.task_id').decode())"
    marker = host(holder).check_output("/opt/downloader/venv/bin/python -c %s %s", read, runs[-1]["path"])
    assert marker.strip() == task_id


def test_list_returns_the_download(downloaded: dict[str, object]) -> None:
    entries = tutorial_list(WORKERS[0])
    assert (downloaded["requested_name"], downloaded["host"]) in entries, entries


def test_list_spans_both_worker_hosts() -> None:
    """One download lands on each worker host (the other host's nodes are stopped while it is
    sent); list() then reports both, each with the host that holds it, whichever node runs it."""
    first, second = WORKERS[0], WORKERS[1]
    names = {}
    for holder, idle in ((first, second), (second, first)):
        set_worker_nodes(idle, "stop")
        try:
            name = f"span-{holder}-{uuid.uuid4().hex[:6]}.bin"
            assert tutorial_download(FLOWERS[0], name)["host"] == holder
            names[holder] = name
        finally:
            set_worker_nodes(idle, "start")
    test_celery_status_lists_every_node_of_every_worker_host()
    entries = tutorial_list(FLOWERS[0])
    for holder, name in names.items():
        assert (name, holder) in entries, entries


def test_app_hosts_run_the_locked_versions_from_their_own_wheelhouse() -> None:
    """The wheelhouse arrives as one archive: unpacked, it must hold a wheel for every pin of
    the lock file that applies to the host (resolved from it alone, offline), and the venv
    must already have exactly those versions."""
    pip = [
        "/opt/downloader/venv/bin/pip", "install", "--dry-run", "--disable-pip-version-check",
        "--no-index", "--find-links", "/opt/downloader/wheelhouse",
        "--requirement", "/opt/downloader/requirements.lock",
    ]  # fmt: skip
    lock = (PROJECT / "app" / "requirements.lock").read_text(encoding="utf-8")
    celery = re.search(r"^celery==(\S+)$", lock, re.M)
    assert celery, "no celery pin in app/requirements.lock"
    for on in sorted(set(WORKERS + FLOWERS)):
        everything = host(on).run(" ".join([*pip, "--ignore-installed", "--no-deps"]))
        assert everything.rc == 0, f"on {on}: the wheelhouse lacks a pin:\n{everything.stderr}"
        assert f"celery-{celery.group(1)}" in everything.stdout, f"on {on}: {everything.stdout}"
        in_place = host(on).run(" ".join(pip))
        assert in_place.rc == 0, f"on {on}:\n{in_place.stderr}"
        assert "Would install" not in in_place.stdout, f"on {on} the venv differs: {in_place.stdout}"


def test_broker_log_has_no_deprecated_feature_warning() -> None:
    """RabbitMQ 4 warns when a client uses a deprecated feature (global QoS, transient
    non-exclusive queues); after all the traffic above, our settings must have caused none."""
    for broker in BROKERS:
        logs = host(broker).run("cat /var/log/rabbitmq/*.log")
        assert logs.rc == 0
        assert "Deprecated features" not in logs.stdout, re.findall(r".*[Dd]eprecated.*", logs.stdout)
