"""What a user of the converged cluster sees, checked from the cluster's own hosts.

Group membership and node names come from the scenario's inventory, so the same tests serve
every scenario whose hosts are in the brokers / workers / flower / testhelpers groups.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
import testinfra
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
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


def nodes_of(worker: str) -> list[str]:
    return RUNNER.get_variables(worker).get("celery_worker_nodes", ["worker1"])


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


def flower_credentials() -> str:
    env = host(FLOWERS[0]).file("/etc/flower/flower.env").content_string
    match = re.search(r"^FLOWER_BASIC_AUTH=(.+)$", env, re.MULTILINE)
    assert match, "no FLOWER_BASIC_AUTH in /etc/flower/flower.env"
    return match.group(1).strip()


# TCP connection attempts from one host, all at once; prints a JSON object that maps each
# "destination:port" to "open" or the error's class name and message. Hosts share one network:
# an open port answers within milliseconds, a dropped one never (2 s, then give up).
CONNECT = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def attempt(target):
    dst, port = target.rsplit(":", 1)
    try:
        socket.create_connection((dst, int(port)), timeout=2).close()
        return "open"
    except OSError as exc:
        return f"{type(exc).__name__} {exc}"
targets = sorted(set(sys.argv[1:]))
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(attempt, targets)))))
"""

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


# An HTTP request to Flower from a host (HTTPS verified against the cluster's CA); prints
# the status code and the body.
HTTP = """
import base64, json, ssl, sys, urllib.error, urllib.request
method, url, auth, body, cafile = sys.argv[1:6]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
if auth:
    req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
ctx = ssl.create_default_context(cafile=cafile)
try:
    with urllib.request.urlopen(req, timeout=15, context=ctx) as resp:
        print(resp.status); print(resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode())
"""


def http(
    src: str, method: str, url: str, auth: str = "", body: str = "", cafile: str = CA_FILE
) -> tuple[int, str]:
    result = host(src).run("python3 -c %s %s %s %s %s %s", HTTP, method, url, auth, body, cafile)
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
        assert host(broker).socket(f"tcp://0.0.0.0:{AMQP_PORT}").is_listening
        assert host(broker).socket(f"tcp://0.0.0.0:{MANAGEMENT_PORT}").is_listening
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


def test_flower_api_with_credentials_runs_the_task(sample_sha256: str) -> None:
    allowed = WORKERS[0]  # of the cluster hosts, the scenario allows worker1 only
    name = f"flower-{uuid.uuid4().hex[:8]}.bin"
    base = FLOWER_URL
    task_id = flower_async_apply_download(allowed, name)
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
    url = f"{FLOWER_URL}/api/task/async-apply/downloaderApp.download"
    body = json.dumps({"args": [SAMPLE_URL, "never.bin"]})
    assert http(WORKERS[0], "POST", url, "", body)[0] == 401
    user = flower_credentials().split(":", 1)[0]
    assert http(WORKERS[0], "POST", url, f"{user}:wrong-password", body)[0] == 401
    assert not any(host(w).file("/var/lib/downloader/files/never.bin").exists for w in WORKERS)


def test_flower_healthcheck_answers() -> None:
    status, body = http(WORKERS[0], "GET", f"{FLOWER_URL}/healthcheck")
    assert (status, body.strip()) == (200, "OK")


def test_flower_port_is_closed_to_hosts_outside_the_allowed_sources() -> None:
    outsiders = [*WORKERS[1:], *BROKERS, WEB]
    outcome = connections((src, FLOWERS[0], FLOWER_PORT) for src in [WORKERS[0], *outsiders])
    assert outcome[(WORKERS[0], FLOWERS[0], FLOWER_PORT)] == "open"  # the allowed one
    for outsider in outsiders:
        assert outcome[(outsider, FLOWERS[0], FLOWER_PORT)] != "open", f"{outsider} reached Flower"


def test_broker_ports_are_closed_to_hosts_outside_their_sources() -> None:
    broker = BROKERS[0]
    others = [*WORKERS, *FLOWERS, WEB]
    inter_node = (4369, 25672)  # Erlang's port mapper and the inter-node port
    outcome = connections(
        [
            (WORKERS[0], broker, AMQP_PORT),
            (WEB, broker, AMQP_PORT),
            *((src, broker, port) for port in inter_node for src in [*others, *BROKERS[1:]]),
            *((other, broker, MANAGEMENT_PORT) for other in others),
        ]
    )
    assert outcome[(WORKERS[0], broker, AMQP_PORT)] == "open"
    # The zone drops what it does not name: no answer at all, not even a refusal.
    assert outcome[(WEB, broker, AMQP_PORT)].startswith("TimeoutError"), "AMQP answered an outsider"
    # The inter-node ports: to the other brokers only.
    for port in inter_node:
        for other in others:
            assert outcome[(other, broker, port)] != "open", f"{other} reached port {port}"
        for peer in BROKERS[1:]:
            assert outcome[(peer, broker, port)] == "open", f"broker {peer} cannot reach port {port}"
    # No admin sources in this scenario: the management port answers no other host.
    for other in others:
        assert outcome[(other, broker, MANAGEMENT_PORT)] != "open", f"{other} reached management"


def test_a_client_source_outside_the_inventory_reaches_amqp() -> None:
    """The controller stands for a client that the inventory does not manage: its address is in
    celery_client_sources, so every broker lets it open AMQP over TLS (the broker's certificate
    and host name verified against the cluster's CA) and answers the AMQP protocol header with
    connection.start (a frame of type 1 on channel 0)."""
    context = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    for broker in BROKERS:
        address = address_of(broker)
        with (
            socket.create_connection((address, AMQP_PORT), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=broker) as tls,
        ):
            tls.sendall(b"AMQP\x00\x00\x09\x01")
            frame = tls.recv(7)
        assert frame[:3] == b"\x01\x00\x00", f"{broker} answered {frame!r}"


# An AMQP login from a host with the app's venv (kombu, as the app connects): TLS when a CA
# file is given (the broker's certificate and host name verified), with a client certificate
# when one is given. Prints "open", or the kind of failure and the exception.
AMQP_LOGIN = """
import ssl, sys
import amqp.exceptions
from kombu import Connection
url, cafile, certfile, keyfile = sys.argv[1:5]
tls = False
if cafile:
    tls = {"ca_certs": cafile, "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    if certfile:
        tls.update(certfile=certfile, keyfile=keyfile)
conn = Connection(url, ssl=tls, connect_timeout=5)
try:
    conn.connect()
    print("open")
except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed) as exc:
    print("refused", type(exc).__name__, exc)
except ssl.SSLError as exc:
    print("tls-error", type(exc).__name__, exc)
except Exception as exc:
    print("error", type(exc).__name__, exc)
finally:
    conn.release()
"""


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


def test_guest_cannot_log_in_from_another_host() -> None:
    assert amqp_login(WORKERS[0], "guest", "guest").startswith("refused")


def test_app_user_is_refused_on_any_other_vhost() -> None:
    """The app's user has rights on its own vhost only: the same credentials that open the
    app's vhost are refused on the broker's default vhost "/"."""
    assert amqp_login(WORKERS[0], "downloader", app_password()) == "open"
    assert amqp_login(WORKERS[0], "downloader", app_password(), vhost="/").startswith("refused")


def test_plain_amqp_is_off_and_its_port_closed() -> None:
    """With TLS on, no broker listens on 5672 (nor on the plain management port), and the
    firewall drops 5672 for every other host: the app's login over plain AMQP gets nowhere."""
    for broker in BROKERS:
        assert not host(broker).socket(f"tcp://0.0.0.0:{PLAIN_AMQP_PORT}").is_listening
        assert not host(broker).socket("tcp://0.0.0.0:15672").is_listening  # plain HTTP
    login = amqp_login(WORKERS[0], "downloader", app_password(), port=PLAIN_AMQP_PORT, cafile="")
    assert login.startswith("error"), login
    attempts = connections((other, BROKERS[0], PLAIN_AMQP_PORT) for other in [*WORKERS, *FLOWERS])
    for (other, _, _), reached in attempts.items():
        assert reached != "open", f"{other} reached 5672"


# A CA of nobody's, and a client certificate it signed, made on a host with openssl.
ROGUE = "/tmp/rogue-pki"
ROGUE_PKI = f"""set -e
d={ROGUE}; rm -rf $d; mkdir -p $d; cd $d
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \\
  -out ca.crt -subj /CN=rogue-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key \\
  -out client.csr -subj /CN=$(hostname) 2>/dev/null
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt \\
  -days 2 2>/dev/null
"""


@pytest.fixture(scope="module")
def rogue_pki() -> Iterator[list[str]]:
    """The rogue CA and its client certificate in ROGUE on a worker host and on the last
    broker (the hosts that attempt connections with them); removed after the module."""
    hosts = [WORKERS[0], BROKERS[-1]]
    try:
        for name in hosts:
            made = host(name).run("sh -c %s", ROGUE_PKI)
            assert made.rc == 0, f"on {name}: {made.stderr}"
        yield hosts
    finally:
        for name in hosts:
            host(name).run("rm -rf %s", ROGUE)


def test_tls_refuses_certificates_from_another_ca(rogue_pki: list[str]) -> None:
    """A client that trusts another CA refuses the broker's certificate; a client showing a
    certificate that another CA signed is refused by the broker, while one that the cluster's
    CA signed (the worker host's own, from the controller) gets in."""
    src = WORKERS[0]
    user, password = "downloader", app_password()
    assert amqp_login(src, user, password) == "open"
    wrong_trust = amqp_login(src, user, password, cafile=f"{ROGUE}/ca.crt")
    assert wrong_trust.startswith("tls-error") and "CERTIFICATE_VERIFY_FAILED" in wrong_trust
    rogue = (f"{ROGUE}/client.crt", f"{ROGUE}/client.key")
    assert amqp_login(src, user, password, client_cert=rogue).startswith("tls-error")
    for name in (f"{src}.crt", f"{src}.key"):
        put_file(src, f"{ROGUE}/own-{name}", (PKI / name).read_bytes())
    own = (f"{ROGUE}/own-{src}.crt", f"{ROGUE}/own-{src}.key")
    assert amqp_login(src, user, password, client_cert=own) == "open"


def test_flower_serves_https_only_with_a_certificate_of_the_cluster(rogue_pki: list[str]) -> None:
    status, _ = http(WORKERS[0], "GET", f"{FLOWER_URL}/healthcheck")
    assert status == 200
    refused = host(WORKERS[0]).run(
        "python3 -c %s GET %s '' '' %s", HTTP, f"{FLOWER_URL}/healthcheck", f"{ROGUE}/ca.crt"
    )
    assert refused.rc != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    plain = host(WORKERS[0]).run(
        "python3 -c %s GET %s '' '' ''", HTTP, f"http://{FLOWERS[0]}:{FLOWER_PORT}/healthcheck"
    )
    assert plain.rc != 0 or not plain.stdout.startswith("200"), plain.stdout


# A throwaway Erlang node on a broker host, with the cluster's cookie, pings a broker's node and
# prints ping=pong or ping=pang (the node to ping is its plain argument, after -extra). Erlang's
# TLS layer may log an alert on the same output, before or after it.
ERLANG_PING = 'io:format("ping=~p~n", [net_adm:ping(list_to_atom(hd(init:get_plain_arguments())))]), halt().'
# TLS settings for a probe that trusts the cluster's CA but shows the rogue CA's certificate.
ROGUE_DIST = f"""[{{server, [{{certfile, "{ROGUE}/client.crt"}}, {{keyfile, "{ROGUE}/client.key"}}]}},
 {{client, [{{certfile, "{ROGUE}/client.crt"}}, {{keyfile, "{ROGUE}/client.key"}},
            {{cacertfile, "/etc/rabbitmq/tls/ca.crt"}}, {{verify, verify_peer}}]}}]."""


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


def test_the_brokers_erlang_distribution_speaks_tls_only(rogue_pki: list[str]) -> None:
    """The Erlang cookie alone no longer opens a node: an Erlang node that knows the cookie
    gets no answer (pang) over plain TCP, nor over TLS with a certificate of another CA; with
    the broker's own distribution settings (its certificate from the cluster's CA), pong."""
    src = BROKERS[-1]
    env = host(src).file("/etc/rabbitmq/rabbitmq-env.conf").content_string
    match = re.search(r'^CTL_ERL_ARGS="(.+)"$', env, re.M)
    assert match, f"no TLS distribution settings in {src}'s rabbitmq-env.conf:\n{env}"
    own_tls = match.group(1)
    written = host(src).run("printf '%%s\n' %s > %s/dist.config", ROGUE_DIST, ROGUE)
    assert written.rc == 0, written.stderr
    rogue_tls = f"-proto_dist inet_tls -ssl_dist_optfile {ROGUE}/dist.config"
    for dst in BROKERS:
        assert erlang_ping(src, dst, "") == "pang", f"{src} reached {dst} over plain TCP"
        assert erlang_ping(src, dst, rogue_tls) == "pang", f"{src} reached {dst} with a rogue certificate"
        assert erlang_ping(src, dst, own_tls) == "pong", f"{src} cannot reach {dst} over TLS"


def sandboxed_units() -> list[tuple[str, str]]:
    units = [(w, f"celery-worker@{n}.service") for w in WORKERS for n in nodes_of(w)]
    return units + [(f, "flower.service") for f in FLOWERS]


def test_units_score_ok_or_better_in_systemd_analyze_security() -> None:
    """systemd's own rating of each unit's sandbox: OK (exposure below 5.0) or better."""
    for name, unit in sandboxed_units():
        result = host(name).run("systemd-analyze security --no-pager %s", unit)
        assert result.rc == 0, f"on {name}: {result.stderr}"
        match = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", result.stdout)
        assert match, f"on {name}: {result.stdout[-500:]}"
        assert match.group(2) in {"OK", "SAFE", "PERFECT"}, f"{unit} on {name}: {match.group(0)}"


# Run by a copy of a unit (same user, same sandbox, ExecStart replaced): try to write a file
# in each place given; print "PLACE written" or "PLACE <the shell's error>".
PROBE = """for p in "$@"; do
  f="$p/.sandbox-probe"
  if err=$( (echo x > "$f") 2>&1 ); then rm -f "$f"; echo "$p written"; else echo "$p $err"; fi
done
"""


def run_in_sandbox_of(name: str, unit: str, places: list[str]) -> dict[str, str]:
    """Start a oneshot copy of UNIT whose only command is PROBE; return what it printed."""
    text = host(name).run("systemctl cat %s", unit)
    assert text.rc == 0, text.stderr
    skip = ("#", "ExecStart", "Type=", "Restart", "KillMode", "[Install]", "WantedBy")
    lines = [line for line in text.stdout.splitlines() if line and not line.startswith(skip)]
    probe = "sandbox-probe-" + uuid.uuid4().hex[:8]
    lines += [
        "Type=oneshot",
        f"StandardOutput=truncate:/run/{probe}.out",
        f"ExecStart=/bin/sh /run/{probe}.sh " + " ".join(places),
    ]
    files = {f"/run/{probe}.sh": PROBE, f"/run/systemd/system/{probe}.service": "\n".join(lines)}
    for path, content in files.items():
        written = host(name).run("printf '%%s\\n' %s > %s && chmod 0644 %s", content, path, path)
        assert written.rc == 0, written.stderr
    try:
        assert host(name).run("systemctl daemon-reload").rc == 0
        started = host(name).run("timeout 60 systemctl start %s", probe)
        assert started.rc == 0, f"on {name}: {started.stderr}"
        out = host(name).file(f"/run/{probe}.out").content_string
    finally:
        host(name).run("rm -f /run/%s.out %s %s; systemctl daemon-reload", probe, *files)
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def test_the_units_sandbox_lets_a_process_write_the_download_directory_only() -> None:
    """A process under a unit's sandbox (as its user) writes the worker's download directory
    and nothing else: the venv, /etc, /var/log and even the service user's own home are on a
    read-only file system."""
    for name, unit in sandboxed_units():
        worker = unit.startswith("celery-worker@")
        own_home = "/var/lib/celery" if worker else "/var/lib/flower"
        read_only = ["/opt/downloader/venv", "/etc", "/var/log", own_home]
        writable = ["/var/lib/downloader/files"] if worker else []
        found = run_in_sandbox_of(name, unit, read_only + writable)
        for place in read_only:
            assert "Read-only file system" in found[place], f"{unit} on {name}: {place}: {found[place]}"
        for place in writable:
            assert found[place] == "written", f"{unit} on {name}: {place}: {found[place]}"


def secrets() -> list[str]:
    """The generated passwords and cookie, and the body of every private key of the PKI (not
    the record of the hosts' addresses, cluster-hosts.json, kept beside them)."""
    found = [p.read_text().split()[0] for p in SECRETS.iterdir() if p.is_file() and not p.suffix]
    assert found, f"no generated secrets in {SECRETS}"
    keys = [p.read_text().splitlines()[1] for p in PKI.glob("*.key")]
    assert len(keys) > len(CLUSTER), f"expected the CA's and every host's key in {PKI}"
    return found + keys


def test_secrets_are_kept_on_the_controller_with_mode_0600() -> None:
    for path in [*SECRETS.iterdir(), *PKI.glob("*.key")]:
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert PKI.stat().st_mode & 0o077 == 0, "pki/ is open to others"
    # On the hosts, each private key is readable by root and its service's group only.
    keys = [(b, "/etc/rabbitmq/tls/server.key", "rabbitmq") for b in BROKERS]
    keys += [(f, "/etc/flower/tls/flower.key", "flower") for f in FLOWERS]
    for name, key, group in keys:
        f = host(name).file(key)
        assert (f.user, f.group, f.mode) == ("root", group, 0o640), f"{name}:{key}"


def short_lived_copy(name: str, days: int) -> bytes:
    """The host's certificate made again by the cluster's CA (same key, names and usages),
    ending in DAYS days."""
    old = x509.load_pem_x509_certificate((PKI / f"{name}.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((PKI / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((PKI / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    start = datetime.now(UTC) - timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days + 1))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_certificates_are_issued_again_when_missing_or_ending_and_kept_when_current() -> None:
    """site.yml --tags pki on the converged cluster: a host certificate removed from the
    controller is issued again, one that ends within pki_cert_renew_days (30) is renewed, both
    by the cluster's CA for the host's own key and names, and a current one is left as it is
    (same bytes). The first files are put back afterwards, so the hosts' copies still match."""
    removed, ending, current = WORKERS[0], WORKERS[1], BROKERS[0]
    originals = {n: (PKI / f"{n}.crt").read_bytes() for n in (removed, ending, current)}
    ca = x509.load_pem_x509_certificate((PKI / "ca.crt").read_bytes())
    try:
        (PKI / f"{removed}.crt").unlink()
        (PKI / f"{ending}.crt").write_bytes(short_lived_copy(ending, days=5))
        run_playbook("site.yml", "-i", INVENTORY, "--tags", "pki")
        assert (PKI / f"{current}.crt").read_bytes() == originals[current], f"{current}'s was issued again"
        for name in (removed, ending):
            new = x509.load_pem_x509_certificate((PKI / f"{name}.crt").read_bytes())
            old = x509.load_pem_x509_certificate(originals[name])
            left = new.not_valid_after_utc - datetime.now(UTC)
            assert left > timedelta(days=300), f"{name}'s certificate ends in {left}"
            assert new.public_key() == old.public_key(), f"{name}'s certificate is not for its key"
            assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName) == (
                old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            ), f"{name}'s certificate has other names"
            ca_public = ca.public_key()
            assert isinstance(ca_public, ec.EllipticCurvePublicKey)
            assert new.signature_hash_algorithm is not None
            # Raises InvalidSignature unless the cluster's CA signed it.
            ca_public.verify(new.signature, new.tbs_certificate_bytes, ec.ECDSA(new.signature_hash_algorithm))
    finally:
        for name, data in originals.items():
            (PKI / f"{name}.crt").write_bytes(data)


# All of a firewall zone's settings on a host, in force and saved (permanent), a line each.
ZONE_STATE = """set -e
firewall-cmd --zone="$1" --list-all | sed 's/^/runtime /'
firewall-cmd --permanent --zone="$1" --list-all | sed 's/^/permanent /'
"""


def zone_of(name: str) -> str:
    zone: str = RUNNER.get_variables(name).get("firewall_zone", "public")
    return zone


def zone_state(name: str) -> list[str]:
    out = host(name).check_output("sh -c %s zone %s", ZONE_STATE, zone_of(name))
    return sorted(" ".join(line.split()) for line in out.splitlines())


def test_firewall_changed_by_hand_is_put_right_by_the_next_run() -> None:
    """On the Flower host, by hand: ssh closed for now, http opened (saved and in force), the
    zone's saved target set to ACCEPT, and a rule that opens Flower's port to the web host
    (outside its sources). `site.yml --tags firewall,flower_firewall` limited to that host puts
    every setting of the zone back as it was, and Flower's port drops the web host's
    connection again."""
    flower = FLOWERS[0]
    rule = (
        f'rule family="ipv4" source address="{cluster_address_of(WEB)}/32" '
        f'port port="{FLOWER_PORT}" protocol="tcp" accept'
    )
    before = zone_state(flower)
    assert {"runtime services: ssh", "permanent target: DROP"} <= set(before), before
    zone = f"--zone={zone_of(flower)}"
    changes = [
        f"firewall-cmd {zone} --remove-service=ssh",
        f"firewall-cmd {zone} --add-service=http",
        f"firewall-cmd --permanent {zone} --add-service=http",
        f"firewall-cmd --permanent {zone} --set-target=ACCEPT",
        f"firewall-cmd {zone} --add-rich-rule='{rule}'",
        f"firewall-cmd --permanent {zone} --add-rich-rule='{rule}'",
    ]
    put_right = False
    try:
        host(flower).check_output(" && ".join(changes))
        assert connect(WEB, flower, FLOWER_PORT) == "open", "the rule added by hand had no effect"
        run_playbook("site.yml", "-i", INVENTORY, "--tags", "firewall,flower_firewall", "--limit", flower)
        assert zone_state(flower) == before
        put_right = True
        assert connect(WEB, flower, FLOWER_PORT).startswith("TimeoutError")
    finally:
        if not put_right:  # undo the changes by hand, for the tests after this one
            undo = [
                f"firewall-cmd --permanent {zone} --remove-service=http",
                f"firewall-cmd --permanent {zone} --add-service=ssh",
                f"firewall-cmd --permanent {zone} --set-target=DROP",
                f"firewall-cmd --permanent {zone} --remove-rich-rule='{rule}'",
                "firewall-cmd --reload",
            ]
            host(flower).run("; ".join(undo))


def test_no_secret_is_in_the_repository() -> None:
    """Generated secrets land in .secrets/ beside the inventory, which git ignores; no tracked
    file holds a secret of this run."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True, text=True)

    tracked = git("ls-files")
    assert tracked.returncode == 0 and tracked.stdout, tracked.stderr
    assert not [p for p in tracked.stdout.splitlines() if ".secrets/" in f"/{p}"]
    for inventory in ["inventory", "molecule/default", "somewhere/else"]:
        ignored = git("check-ignore", "--no-index", "-q", f"{inventory}/.secrets/rabbitmq_app_password")
        assert ignored.returncode == 0, f"{inventory}/.secrets/ is not covered by .gitignore"
    for secret in secrets():
        assert git("grep", "-q", "-F", "-e", secret).returncode == 1, "a tracked file holds a secret"


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


# A line of the play recap: host, changed, unreachable, failed.
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible_playbook(playbook: str, *args: str) -> tuple[int, str]:
    """ansible-playbook PROJECT/PLAYBOOK ARGS with the project's roles: its exit code and its
    output (stdout and stderr)."""
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(
        ["ansible-playbook", str(PROJECT / playbook), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    return proc.returncode, proc.stdout + proc.stderr


def run_playbook(playbook: str, *args: str) -> str:
    """ansible-playbook PROJECT/PLAYBOOK ARGS; its output, after asserting that it succeeded."""
    rc, out = ansible_playbook(playbook, *args)
    assert rc == 0, out[-6000:]
    return out


def test_check_mode_on_the_converged_cluster_reports_nothing_to_change() -> None:
    """A verbose (-v) check run with --diff: nothing to change, and no secret in its output."""
    out = run_playbook("site.yml", "-i", INVENTORY, "--check", "--diff", "-v")
    recap = RECAP.findall(out)
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
