"""The tests' shared library: the scenario's hosts and constants, the probes run on the test
hosts, and the tutorial's usage as a client writes it.

Group membership and node names come from the scenario's inventory, so the same helpers serve
every scenario whose hosts are in the brokers / workers / flower / testhelpers groups. Molecule's
verifier has this directory on PYTHONPATH (.config/molecule/config.yml).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import testinfra
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
RUNNER = AnsibleRunner(INVENTORY)

BROKERS = RUNNER.get_hosts("brokers")
# The worker hosts of the downloader; ALL_WORKERS also has those of the default scenario's
# other apps: the reports app (group reports_workers) and the README's own app (greeter_workers).
ALL_WORKERS = RUNNER.get_hosts("workers")
OTHER_APP_WORKERS = RUNNER.get_hosts("reports_workers")
README_APP_WORKERS = RUNNER.get_hosts("greeter_workers")
WORKERS = [name for name in ALL_WORKERS if name not in OTHER_APP_WORKERS + README_APP_WORKERS]
# The downloader's Flower hosts; ALL_FLOWERS also has another app's (group reports_flower).
ALL_FLOWERS = RUNNER.get_hosts("flower")
OTHER_APP_FLOWERS = RUNNER.get_hosts("reports_flower")
FLOWERS = [name for name in ALL_FLOWERS if name not in OTHER_APP_FLOWERS]
# The downloader's client hosts; ALL_CLIENTS also has another app's (group reports_clients).
ALL_CLIENTS = RUNNER.get_hosts("clients")
OTHER_APP_CLIENTS = RUNNER.get_hosts("reports_clients")
CLIENTS = [name for name in ALL_CLIENTS if name not in OTHER_APP_CLIENTS]
WEB = RUNNER.get_hosts("testhelpers")[0]
# The brokers and every app's worker and Flower hosts (not the client and monitoring hosts).
CLUSTER = sorted(set(BROKERS + ALL_WORKERS + ALL_FLOWERS))
VENV_PYTHON = "/opt/downloader/venv/bin/python"
SAMPLE_URL = f"http://{WEB}:8000/sample.bin"
FLOWER_PORT = 5555
# TLS is on by default in every role; the scenarios keep the defaults.
AMQP_PORT = 5671
PLAIN_AMQP_PORT = 5672
MANAGEMENT_PORT = 15671
FLOWER_URL = f"https://{FLOWERS[0]}:{FLOWER_PORT}"
CA_FILE = "/etc/downloader/ca.crt"  # the cluster's CA, on every app host
SECRETS = Path(INVENTORY).parent / ".secrets"  # generated on the controller
PKI = SECRETS / "pki"


@cache
def host(name: str) -> testinfra.host.Host:
    """A test host, for the tests' own probes: `docker exec` into its container, as root (the
    playbooks reach the hosts over SSH as the inventory says)."""
    return testinfra.get_host(f"docker://{name}")


def put_file(name: str, path: str, data: bytes) -> None:
    """Write DATA to PATH (mode 0600) on a test host, through `docker exec` (docker cp cannot
    write below the hosts' tmpfs mounts)."""
    subprocess.run(
        ["docker", "exec", "-i", name, "sh", "-c", 'umask 077 && cat > "$1"', "sh", path],
        input=data, check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def docker(*args: str) -> None:
    """docker ARGS on the controller (pause and unpause a test host: one that stops answering)."""
    subprocess.run(["docker", *args], check=True, capture_output=True, timeout=60)


def short(name: str) -> str:
    """A host's name as the host knows itself: inventory names may be FQDNs (broker1.celery.test)
    whose first label is the host name (broker1), as in Celery's and RabbitMQ's node names."""
    return name.split(".")[0]


def address_of(name: str) -> str:
    """A test host's address, for the controller (it has no DNS entry for the test hosts): the
    one Ansible logs in to."""
    address = RUNNER.get_variables(name).get("ansible_host")
    return str(address or host(name).check_output("hostname -I").split()[0])


def cluster_address_of(name: str) -> str:
    """The address a test host's connections to the cluster come from: its cluster_address
    where the scenario gives one (a second network), else its only one."""
    return str(RUNNER.get_variables(name).get("cluster_address") or address_of(name))


def python(on: str, code: str, timeout: int = 120) -> str:
    """Run Python code with the app's venv on a host; return its stdout, fail on error."""
    result = host(on).run("timeout %s %s -c %s", str(timeout), VENV_PYTHON, code)
    assert result.rc == 0, f"on {on}: rc={result.rc}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def inventory_name(hostname: str) -> str:
    """The inventory name of the worker host that calls itself HOSTNAME (as a download's
    record does)."""
    names = {short(name): name for name in WORKERS + RUNNER.get_hosts("spare")}
    return names.get(hostname, hostname)


def status_nodes(out: str) -> set[str]:
    """The nodes that `celery -A APP status` output OUT lists as answering (`->  NODE: OK`)."""
    return set(re.findall(r"->\s+(\S+@\S+):\s+OK", out))


def nodes_of(worker: str) -> list[str]:
    return RUNNER.get_variables(worker).get("celery_worker_nodes", ["worker1"])


def app_of(name: str) -> str:
    """The id of the app an app host runs (its cluster_app; the first app, the downloader, by
    default)."""
    return str(RUNNER.get_variables(name).get("cluster_app", "downloader"))


def config_env(app: str) -> str:
    """The environment in which a command on APP's hosts finds its configuration module (the
    README's "Contract with an app"; not the downloader, which reads its own file)."""
    return f"CELERY_CONFIG_MODULE=celeryconfig PYTHONPATH=/etc/{app}"


def worker_unit(worker: str, node: str) -> str:
    """The systemd unit of NODE on WORKER: the instance of its app's template unit."""
    return f"celery-worker-{app_of(worker)}@{node}"


def main_pid(on: str, unit: str) -> int:
    """The main process of UNIT on host ON (0: not running): another one after a restart."""
    return int(host(on).run(f"systemctl show -p MainPID --value {unit}").stdout.strip())


def flower_unit(flower: str) -> str:
    """The systemd unit of the Flower host FLOWER: its app's."""
    return f"flower-{app_of(flower)}"


def expected_nodes() -> set[str]:
    return {f"{node}@{short(worker)}" for worker in WORKERS for node in nodes_of(worker)}


def tutorial_download(on: str, name: str) -> dict[str, object]:
    """The tutorial's client code, as written, on a cluster host: download.delay(url, name)."""
    code = (
        "import json\n"
        "from downloaderApp import download, list\n"
        f"r = download.delay({SAMPLE_URL!r}, {name!r})\n"
        "print(json.dumps(r.get(timeout=60)))\n"
    )
    record: dict[str, object] = json.loads(python(on, code).strip().splitlines()[-1])
    record["host"] = inventory_name(str(record["host"]))
    return record


def tutorial_list(on: str) -> set[tuple[str, str]]:
    """The tutorial's list.delay().get(timeout=1) on a cluster host, as (name, host) pairs."""
    code = (
        "import json\n"
        "from downloaderApp import download, list\n"
        "print(json.dumps(list.delay().get(timeout=1)))\n"
    )
    listing = json.loads(python(on, code).strip().splitlines()[-1])
    return {(e["name"], inventory_name(e["host"])) for e in listing}


def flower_credentials(flower: str = "") -> str:
    """USER:PASSWORD of the Flower on host FLOWER (default: the downloader's first)."""
    env = host(flower or FLOWERS[0]).file("/etc/flower/flower.env").content_string
    match = re.search(r"^FLOWER_BASIC_AUTH=(.+)$", env, re.MULTILINE)
    assert match, "no FLOWER_BASIC_AUTH in /etc/flower/flower.env"
    return match.group(1).strip()


# Scripts that the tests run on the test hosts (python3 -c, sh -c, erl -eval), kept as files.
PROBES = Path(__file__).parent / "probes"


def probe(name: str) -> str:
    return (PROBES / name).read_text(encoding="utf-8")


# TCP connection attempts from one host, all at once: a JSON object that maps each
# "destination:port" to "open" or the error's class name and message.
CONNECT = probe("connect.py")
# An HTTP request from a host (HTTPS verified against a CA file): the status code and the body.
HTTP = probe("http_request.py")
# An AMQP login with the app's venv (kombu, as the app connects): "open", or the kind of failure.
AMQP_LOGIN = probe("amqp_login.py")
# A durable classic queue on one broker, with persistent messages in it: "filled".
CLASSIC_QUEUE = probe("classic_queue.py")
# A throwaway Erlang node pings a broker's node: ping=pong or ping=pang.
ERLANG_PING = probe("erlang_ping.erl").strip()

Attempt = tuple[str, str, int]  # (source host, destination, port)


def connections(attempts: Iterable[Attempt]) -> dict[Attempt, str]:
    """The outcome of each TCP connection attempt: "open", or the error's class name and
    message. A source's attempts are made at once from that host, the sources side by side,
    so a list of dropped ports costs one 2-s timeout rather than one each."""
    wanted = list(attempts)
    by_source: dict[str, list[str]] = {}
    for src, dst, port in wanted:
        by_source.setdefault(src, []).append(f"{dst}:{port}")

    def attempt_from(src: str) -> tuple[str, dict[str, str]]:
        targets = by_source[src]
        placeholders = " ".join(["%s"] * len(targets))
        result = host(src).run(f"python3 -c %s {placeholders}", CONNECT, *targets)
        assert result.rc == 0, f"on {src}: {result.stderr}"
        return src, json.loads(result.stdout)

    with ThreadPoolExecutor(len(by_source)) as pool:
        outcomes = dict(pool.map(attempt_from, by_source))
    return {(src, dst, port): outcomes[src][f"{dst}:{port}"] for src, dst, port in wanted}


def connect(src: str, dst: str, port: int) -> str:
    return connections([(src, dst, port)])[(src, dst, port)]


def http(
    src: str, method: str, url: str, auth: str = "", body: str = "", cafile: str = CA_FILE
) -> tuple[int, str]:
    result = host(src).run("python3 -c %s %s %s %s %s %s", HTTP, method, url, auth, body, cafile)
    assert result.rc == 0, f"{result.stdout}\n{result.stderr}"
    status, _, text = result.stdout.partition("\n")
    return int(status), text


def set_worker_nodes(worker: str, state: str) -> None:
    for node in nodes_of(worker):
        result = host(worker).run(f"systemctl {state} {worker_unit(worker, node)}")
        assert result.rc == 0, result.stderr


def flower_async_apply_download(src: str, name: str) -> str:
    """The tutorial's curl call to Flower's REST API (over HTTPS, with credentials) from host
    SRC: download SAMPLE_URL as NAME. Returns the task id."""
    status, body = http(
        src,
        "POST",
        f"{FLOWER_URL}/api/task/async-apply/downloaderApp.download",
        flower_credentials(),
        json.dumps({"args": [SAMPLE_URL, name]}),
    )
    assert status == 200, body
    task_id: str = json.loads(body)["task-id"]
    return task_id


def flower_task_state(
    src: str, task_id: str, timeout: float = 60, flower: str = ""
) -> tuple[str | None, str]:
    """The state that Flower's API on host FLOWER (default: the downloader's first), asked
    from host SRC, gives task TASK_ID once it is SUCCESS or FAILURE, or the last state seen when
    TIMEOUT seconds pass (None: Flower has no event of the task); with the last response's
    body."""
    deadline = time.monotonic() + timeout
    url = f"https://{flower}:{FLOWER_PORT}" if flower else FLOWER_URL
    state, body, credentials = None, "", flower_credentials(flower)
    while time.monotonic() < deadline:
        status, body = http(src, "GET", f"{url}/api/task/info/{task_id}", credentials)
        if status == 200:
            state = json.loads(body).get("state")
            if state in ("SUCCESS", "FAILURE"):
                break
        time.sleep(2)
    return state, body


def app_password() -> str:
    return (SECRETS / "rabbitmq_app_password").read_text().split()[0]


def amqp_login(
    src: str,
    user: str,
    password: str,
    vhost: str = "downloader",
    port: int = AMQP_PORT,
    cafile: str = CA_FILE,
    client_cert: tuple[str, str] = ("", ""),
) -> str:
    url = f"pyamqp://{user}:{password}@{BROKERS[0]}:{port}/{vhost.replace('/', '%2F')}"
    result = host(src).run(
        "timeout 60 %s -c %s %s %s %s %s", VENV_PYTHON, AMQP_LOGIN, url, cafile, *client_cert
    )
    assert result.rc == 0, f"on {src}: {result.stdout}\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def classic_queue_with_messages(src: str, broker: str, name: str, count: int) -> None:
    """A durable classic queue NAME on BROKER (on the app vhost, declared from SRC as the worker
    user) holding COUNT persistent messages."""
    url = f"pyamqp://downloader:{app_password()}@{broker}:{AMQP_PORT}/downloader"
    result = host(src).run(
        "timeout 60 %s -c %s %s %s %s %s", VENV_PYTHON, CLASSIC_QUEUE, url, CA_FILE, name, str(count)
    )
    assert result.rc == 0 and "filled" in result.stdout, f"on {src}: {result.stdout}\n{result.stderr}"


def erlang_ping(src: str, dst: str, dist_args: str) -> str:
    cookie = host(src).file("/var/lib/rabbitmq/.erlang.cookie").content_string.strip()
    target = f"rabbit@{host(dst).check_output('hostname -s')}"
    result = host(src).run(
        f"timeout 60 erl -sname probe{uuid.uuid4().hex[:6]} {dist_args} -setcookie %s "
        "-noinput -eval %s -extra %s",
        cookie,
        ERLANG_PING,
        target,
    )
    answer = re.search(r"^ping=(\w+)$", result.stdout, re.M)
    assert result.rc == 0 and answer, f"on {src}: {result.stdout}\n{result.stderr}"
    return answer.group(1)


def secrets() -> list[str]:
    """The generated passwords (every app's) and cookie, and the body of every private key of the PKI (not
    the record of the hosts' addresses, cluster-hosts.json, kept beside them)."""
    files = [*SECRETS.iterdir(), *SECRETS.glob("apps/*/*")]  # apps/ID/: an app's passwords
    found = [p.read_text().split()[0] for p in files if p.is_file() and not p.suffix]
    assert found, f"no generated secrets in {SECRETS}"
    keys = [p.read_text().splitlines()[1] for p in PKI.glob("*.key")]
    assert len(keys) > len(CLUSTER), f"expected the CA's and every host's key in {PKI}"
    return found + keys


# Edited inventories live beside molecule's inventory directory, not in it: Ansible reads every
# file of that directory as inventory, and an edited file found there at a converge (left by
# an earlier run, which molecule had not pruned) put a spare host in `workers`, and every test
# counting worker nodes failed. Links give them the scenario's group_vars, host_vars and
# generated secrets (INVENTORY_DIR/.secrets).
EDITED = Path(INVENTORY).parent.parent / "grown-inventory"


def edited_inventory(name: str, edit: Callable[[dict[str, Any]], None]) -> str:
    """A copy of the scenario's inventory, NAME.yml, whose groups (a dict by group name) EDIT
    has changed in place: the path, for ansible-playbook -i."""
    EDITED.mkdir(exist_ok=True)
    for link_name in ("group_vars", "host_vars", ".secrets"):
        link = EDITED / link_name
        if not link.is_symlink():
            link.symlink_to(Path(INVENTORY).parent / link_name)
    data = yaml.safe_load(Path(INVENTORY).read_text())
    # Molecule writes each group at the top level; a hand-written inventory nests them.
    edit(data["all"]["children"] if "children" in data.get("all", {}) else data)
    path = EDITED / f"{name}.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# A line of the play recap: host, changed, unreachable, failed.
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible_playbook(playbook: str, *args: str) -> tuple[int, str]:
    """ansible-playbook PROJECT/PLAYBOOK ARGS with the project's roles: its exit code and its
    output (stderr, then stdout: a failure's message and the recap come last, where an
    assertion shows the output's tail)."""
    env = dict(
        os.environ,
        ANSIBLE_ROLES_PATH=str(PROJECT / "roles"),
        ANSIBLE_FORCE_COLOR="0",
        # The crypto collection's DSA notice, once per host and task, would fill that tail.
        PYTHONWARNINGS="ignore:DSA is deprecated",
    )
    proc = subprocess.run(
        ["ansible-playbook", str(PROJECT / playbook), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    return proc.returncode, proc.stderr + proc.stdout


def run_playbook(playbook: str, *args: str) -> str:
    """ansible-playbook PROJECT/PLAYBOOK ARGS; its output, after asserting that it succeeded."""
    rc, out = ansible_playbook(playbook, *args)
    # A failed task's message may be far from the tail (a failed handler's, written to stderr,
    # comes first): the failures, each with the lines of its message, lead the assertion's text.
    lines = out.splitlines()
    failures = "\n".join(
        "\n".join(lines[i : i + 12]) for i, line in enumerate(lines) if line.startswith("fatal:")
    )
    assert rc == 0, f"{failures[-3000:]}\n...\n{out[-6000:]}"
    return out
