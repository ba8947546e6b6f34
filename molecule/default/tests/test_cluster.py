"""What a user of the converged cluster sees, checked from the cluster's own hosts.

Group membership and node names come from the scenario's inventory, so the same tests serve
every scenario whose hosts are in the brokers / workers / flower / testhelpers groups.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from functools import cache
from pathlib import Path

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
RUNNER = AnsibleRunner(INVENTORY)

BROKERS = RUNNER.get_hosts("brokers")
WORKERS = RUNNER.get_hosts("workers")
FLOWERS = RUNNER.get_hosts("flower")
WEB = RUNNER.get_hosts("testhelpers")[0]
CLUSTER = sorted(set(BROKERS + WORKERS + FLOWERS))
VENV_PYTHON = "/opt/downloader/venv/bin/python"
SAMPLE_URL = f"http://{WEB}:8000/sample.bin"
FLOWER_PORT = 5555


@cache
def host(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def python(on: str, code: str, timeout: int = 120) -> str:
    """Run Python code with the app's venv on a host; return its stdout, fail on error."""
    result = host(on).run("timeout %s %s -c %s", str(timeout), VENV_PYTHON, code)
    assert result.rc == 0, f"on {on}: rc={result.rc}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def nodes_of(worker: str) -> list[str]:
    return RUNNER.get_variables(worker).get("celery_worker_nodes", ["worker1"])


def expected_nodes() -> set[str]:
    return {f"{node}@{worker}" for worker in WORKERS for node in nodes_of(worker)}


def tutorial_download(on: str, name: str) -> dict[str, object]:
    """The tutorial's client code, as written, on a cluster host: download.delay(url, name)."""
    code = (
        "import json\n"
        "from downloaderApp import download, list\n"
        f"r = download.delay({SAMPLE_URL!r}, {name!r})\n"
        "print(json.dumps(r.get(timeout=60)))\n"
    )
    record: dict[str, object] = json.loads(python(on, code).strip().splitlines()[-1])
    return record


def tutorial_list(on: str) -> set[tuple[str, str]]:
    """The tutorial's list.delay().get(timeout=1) on a cluster host, as (name, host) pairs."""
    code = (
        "import json\n"
        "from downloaderApp import download, list\n"
        "print(json.dumps(list.delay().get(timeout=1)))\n"
    )
    listing = json.loads(python(on, code).strip().splitlines()[-1])
    return {(e["name"], e["host"]) for e in listing}


def flower_credentials() -> str:
    env = host(FLOWERS[0]).file("/etc/flower/flower.env").content_string
    match = re.search(r"^FLOWER_BASIC_AUTH=(.+)$", env, re.MULTILINE)
    assert match, "no FLOWER_BASIC_AUTH in /etc/flower/flower.env"
    return match.group(1).strip()


# A TCP connection attempt from a host; prints "open" or the error's class name.
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()
    print("open")
except OSError as exc:
    print(type(exc).__name__, exc)
"""


def connect(src: str, dst: str, port: int) -> str:
    result = host(src).run("python3 -c %s %s %s", CONNECT, dst, str(port))
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


# An HTTP request to Flower from a host; prints the status code and the body.
HTTP = """
import base64, json, sys, urllib.error, urllib.request
method, url, auth, body = sys.argv[1:5]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
if auth:
    req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
try:
    with urllib.request.urlopen(req, timeout=15) as resp:
        print(resp.status); print(resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode())
"""


def http(src: str, method: str, url: str, auth: str = "", body: str = "") -> tuple[int, str]:
    result = host(src).run("python3 -c %s %s %s %s %s", HTTP, method, url, auth, body)
    assert result.rc == 0, f"{result.stdout}\n{result.stderr}"
    status, _, text = result.stdout.partition("\n")
    return int(status), text


def test_every_service_is_active_and_enabled() -> None:
    units = [(b, "rabbitmq-server") for b in BROKERS]
    units += [(w, f"celery-worker@{n}") for w in WORKERS for n in nodes_of(w)]
    units += [(f, "flower") for f in FLOWERS]
    units += [(h, "firewalld") for h in CLUSTER]
    for name, unit in units:
        service = host(name).service(unit)
        assert service.is_running, f"{unit} is not running on {name}"
        assert service.is_enabled, f"{unit} is not enabled on {name}"


def test_ports_are_listening() -> None:
    for broker in BROKERS:
        assert host(broker).socket("tcp://0.0.0.0:5672").is_listening
        assert host(broker).socket("tcp://0.0.0.0:15672").is_listening
    for flower in FLOWERS:
        assert host(flower).socket(f"tcp://0.0.0.0:{FLOWER_PORT}").is_listening


def test_celery_status_lists_every_node_of_every_worker_host() -> None:
    deadline = time.monotonic() + 60
    while True:
        out = host(FLOWERS[0]).run("celery -A downloaderApp status").stdout
        seen = set(re.findall(r"->\s+(\S+@\S+):\s+OK", out))
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
def sample_sha256() -> str:
    return host(WEB).file("/srv/www/sample.bin").sha256sum


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


def test_list_returns_the_download(downloaded: dict[str, object]) -> None:
    entries = tutorial_list(WORKERS[0])
    assert (downloaded["requested_name"], downloaded["host"]) in entries, entries


def set_worker_nodes(worker: str, state: str) -> None:
    for node in nodes_of(worker):
        result = host(worker).run(f"systemctl {state} celery-worker@{node}")
        assert result.rc == 0, result.stderr


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


def test_flower_api_with_credentials_runs_the_task(sample_sha256: str) -> None:
    allowed = WORKERS[0]  # the scenario allows worker1 only
    name = f"flower-{uuid.uuid4().hex[:8]}.bin"
    base = f"http://{FLOWERS[0]}:{FLOWER_PORT}"
    status, body = http(
        allowed,
        "POST",
        f"{base}/api/task/async-apply/downloaderApp.download",
        flower_credentials(),
        json.dumps({"args": [SAMPLE_URL, name]}),
    )
    assert status == 200, body
    task_id = json.loads(body)["task-id"]
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline:
        status, body = http(allowed, "GET", f"{base}/api/task/info/{task_id}", flower_credentials())
        if status == 200:
            state = json.loads(body).get("state")
            if state in ("SUCCESS", "FAILURE"):
                break
        time.sleep(2)
    assert state == "SUCCESS", body
    holders = [w for w in WORKERS if host(w).file(f"/var/lib/downloader/files/{name}").exists]
    assert len(holders) == 1
    assert host(holders[0]).file(f"/var/lib/downloader/files/{name}").sha256sum == sample_sha256


def test_flower_refuses_missing_or_wrong_credentials() -> None:
    url = f"http://{FLOWERS[0]}:{FLOWER_PORT}/api/task/async-apply/downloaderApp.download"
    body = json.dumps({"args": [SAMPLE_URL, "never.bin"]})
    assert http(WORKERS[0], "POST", url, "", body)[0] == 401
    user = flower_credentials().split(":", 1)[0]
    assert http(WORKERS[0], "POST", url, f"{user}:wrong-password", body)[0] == 401
    assert not any(host(w).file("/var/lib/downloader/files/never.bin").exists for w in WORKERS)


def test_flower_healthcheck_answers() -> None:
    status, body = http(WORKERS[0], "GET", f"http://{FLOWERS[0]}:{FLOWER_PORT}/healthcheck")
    assert (status, body.strip()) == (200, "OK")


def test_flower_port_is_closed_to_hosts_outside_the_allowed_sources() -> None:
    assert connect(WORKERS[0], FLOWERS[0], FLOWER_PORT) == "open"  # the allowed one
    for outsider in [*WORKERS[1:], *BROKERS, WEB]:
        outcome = connect(outsider, FLOWERS[0], FLOWER_PORT)
        assert outcome != "open", f"{outsider} reached Flower"


def test_broker_ports_are_closed_to_hosts_outside_their_sources() -> None:
    broker = BROKERS[0]
    assert connect(WORKERS[0], broker, 5672) == "open"
    assert connect(WEB, broker, 5672) != "open", "a host outside the cluster reached AMQP"
    # No admin sources in this scenario: the management port answers no other host.
    for other in [*WORKERS, *FLOWERS, WEB]:
        assert connect(other, broker, 15672) != "open", f"{other} reached the management port"


def test_guest_cannot_log_in_from_another_host() -> None:
    code = (
        "from kombu import Connection\n"
        "import amqp.exceptions\n"
        f"conn = Connection('pyamqp://guest:guest@{BROKERS[0]}:5672//', connect_timeout=5)\n"
        "try:\n"
        "    conn.connect()\n"
        "    print('logged in')\n"
        "except amqp.exceptions.AccessRefused as exc:\n"
        "    print('refused', exc)\n"
    )
    assert python(WORKERS[0], code).startswith("refused")


def secrets() -> list[str]:
    secrets_dir = Path(INVENTORY).parent / ".secrets"
    found = [p.read_text().split()[0] for p in secrets_dir.iterdir() if p.is_file()]
    assert found, f"no generated secrets in {secrets_dir}"
    return found


def test_secrets_are_kept_on_the_controller_with_mode_0600() -> None:
    for path in (Path(INVENTORY).parent / ".secrets").iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


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


def test_check_mode_on_the_converged_cluster_reports_nothing_to_change() -> None:
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(
        ["ansible-playbook", str(PROJECT / "site.yml"), "-i", INVENTORY, "--check", "--diff"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M)
    assert {name for name, *_ in recap} >= set(CLUSTER)
    for name, changed, unreachable, failed in recap:
        assert (changed, unreachable, failed) == ("0", "0", "0"), f"{name}:\n{out[-5000:]}"
    for secret in secrets():
        assert secret not in out, "a secret appears in the output of the check run"


def test_broker_log_has_no_deprecated_feature_warning() -> None:
    """RabbitMQ 4 warns when a client uses a deprecated feature (global QoS, transient
    non-exclusive queues); after all the traffic above, our settings must have caused none."""
    for broker in BROKERS:
        logs = host(broker).run("cat /var/log/rabbitmq/*.log")
        assert logs.rc == 0
        assert "Deprecated features" not in logs.stdout, re.findall(r".*[Dd]eprecated.*", logs.stdout)
