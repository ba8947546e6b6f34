"""Two apps on one cluster: the downloader on its worker hosts, and the reports app
(examples/reports-app, an app of the operator's own, in cluster_apps with its module and
source) on rworker1 and rworker2, group reports_workers, each host serving one of its two
queues, with its own Flower on rflower1 (group reports_flower). Each app has its own venv,
configuration, units, vhost, queues and Flower login; the reports app reads the cluster's
settings from the configuration module the celery_app role renders (CELERY_CONFIG_MODULE), as
the README's contract says.
"""

from __future__ import annotations

import hashlib
import json
import re

from celerylab import (
    BROKERS,
    CLIENTS,
    FLOWER_PORT,
    FLOWERS,
    INVENTORY,
    OTHER_APP_CLIENTS,
    OTHER_APP_FLOWERS,
    OTHER_APP_WORKERS,
    PROJECT,
    SECRETS,
    WORKERS,
    amqp_login,
    app_password,
    config_env,
    flower_credentials,
    flower_task_state,
    host,
    http,
    main_pid,
    nodes_of,
    probe,
    run_playbook,
    worker_unit,
)

REPORTS_ENV = config_env("reports")
REPORTS_CELERY = f"env {REPORTS_ENV} /opt/reports/venv/bin/celery -A reportsApp"
# Each reports host's node and the one queue it serves (the scenario's celery_worker_queues).
FAST_NODE, SLOW_NODE = "reports1@rworker1", "reports2@rworker2"
# Submits both tasks and prints their results; a task that gets no result within its timeout
# prints "timeout" in its place. Argument: seconds to wait for each.
SUBMIT = """
import json, sys
from celery.exceptions import TimeoutError
from reportsApp import count_words, summarize
wait = float(sys.argv[1])
fast, slow = count_words.delay("one two three"), summarize.delay([3, 1, 2])
out = []
for result in (fast, slow):
    try:
        out.append(result.get(timeout=wait))
    except TimeoutError:
        out.append("timeout")
print(json.dumps(out))
"""


def reports_worker(index: int = 0) -> str:
    assert len(OTHER_APP_WORKERS) == 2, "the scenario has not two worker hosts of the reports app"
    return sorted(OTHER_APP_WORKERS)[index]


def submit(wait: float, on: str = "") -> list[object]:
    """count_words and summarize sent from ON (default the first reports worker host), with
    its configuration."""
    result = host(on or reports_worker()).run(
        f"timeout 120 env {REPORTS_ENV} /opt/reports/venv/bin/python -c %s %s", SUBMIT, str(wait)
    )
    assert result.rc == 0, result.stdout + result.stderr
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def inspect_queues(on: str, celery: str, node: str) -> set[str]:
    out = host(on).check_output(f"{celery} inspect active_queues -d {node} --timeout 10 --json")
    return {queue["name"] for queue in json.loads(out)[node]}


def test_each_app_has_its_own_venv_configuration_and_units() -> None:
    """rworker1 and rworker2 run the reports app alone: its venv under /opt/reports, its
    configuration module (root and the group reports only), a unit celery-worker-reports@reportsN with
    -A reportsApp and the one queue the host serves; no downloader there. The downloader's
    worker hosts have nothing of the reports app."""
    for index, queue in enumerate(["reports.fast", "reports.slow"]):
        reports = host(reports_worker(index))
        config = reports.file("/etc/reports/celeryconfig.py")
        assert (config.user, config.group, config.mode) == ("root", "reports", 0o640)
        urls = re.findall(r'"(pyamqp://[^"]+)"', config.content_string)
        expected = r"pyamqp://reports:[^@]+@[^/]+:5671/reports"
        assert urls and all(re.fullmatch(expected, url) for url in urls), urls
        assert reports.service(f"celery-worker-reports@reports{index + 1}").is_running
        celeryd = reports.file("/etc/default/celeryd").content_string
        assert 'CELERY_APP="reportsApp"' in celeryd and 'CELERY_CONFIG_MODULE="celeryconfig"' in celeryd
        # The group's own pool and size, not those of `workers`, which the host is also in.
        assert "--pool=prefork --concurrency=2 " in celeryd, celeryd
        assert f"--queues={queue}" in celeryd, celeryd
        assert not reports.file("/opt/downloader").exists and not reports.file("/etc/downloader").exists
    for name in WORKERS:
        assert not host(name).file("/opt/reports").exists, name
        assert not host(name).file("/etc/reports").exists, name


# What the reports app's configuration module gives a stock Celery app: the result backend and
# the worker's consumer of the failover module, and its transport for "pyamqp".
FAILOVER_IN_USE = """
import json, kombu.transport
from reportsApp import app
backend = type(app.backend)
print(json.dumps([f"{backend.__module__}.{backend.__name__}", app.conf.worker_consumer,
                  kombu.transport.TRANSPORT_ALIASES["pyamqp"]]))
"""


def test_another_app_gets_the_downloaders_failover_fixes() -> None:
    """The file the downloader keeps its failover fixes in (app/tests/test_failover.py tests
    them on a stock Celery app) is beside the reports app's configuration module on its worker
    and Flower hosts, byte for byte, and that module names its classes."""
    shipped = hashlib.sha256((PROJECT / "app/src/downloaderApp/failover.py").read_bytes()).hexdigest()
    for name in [*OTHER_APP_WORKERS, *OTHER_APP_FLOWERS]:
        module = host(name).file("/etc/reports/celery_failover.py")
        assert (module.user, module.group, module.mode) == ("root", "root", 0o644), name
        assert module.sha256sum == shipped, name
    out = host(reports_worker()).check_output(
        f"env {REPORTS_ENV} /opt/reports/venv/bin/python -c %s", FAILOVER_IN_USE
    )
    assert json.loads(out.splitlines()[-1]) == [
        "celery_failover.RPCBackend",
        "celery_failover:Consumer",
        "celery_failover:HostVerifyingTransport",
    ]


def ran(on: str, unit: str, task: str) -> int:
    """How many times TASK succeeded in UNIT's journal on host ON."""
    out = host(on).run("journalctl --no-pager -q -u %s -g %s", unit, rf"{task}\[.*\] succeeded").stdout
    return len(out.splitlines())


def test_each_app_runs_its_tasks_on_its_own_queues_and_workers() -> None:
    """reports1@rworker1 consumes reports.fast, reports2@rworker2 reports.slow (inspect
    active_queues), the downloader's nodes only celery. count_words and summarize return their
    results to the caller, each run by the node of its queue only (the nodes' journals); with
    reports2's consumer of reports.slow cancelled, summarize waits in its queue while
    count_words still runs (each task goes to the queue the app routes it to), and runs once
    the consumer is back."""
    fast, slow = reports_worker(0), reports_worker(1)
    assert inspect_queues(fast, REPORTS_CELERY, FAST_NODE) == {"reports.fast"}
    assert inspect_queues(slow, REPORTS_CELERY, SLOW_NODE) == {"reports.slow"}
    node = f"worker1@{WORKERS[0].split('.')[0]}"
    assert inspect_queues(WORKERS[0], "celery -A downloaderApp", node) == {"celery"}
    assert submit(60) == [3, {"count": 3, "total": 6, "min": 1, "max": 3}]
    assert ran(fast, "celery-worker-reports@reports1", "reportsApp.count_words") > 0
    assert ran(slow, "celery-worker-reports@reports2", "reportsApp.summarize") > 0
    assert ran(fast, "celery-worker-reports@reports1", "reportsApp.summarize") == 0
    assert ran(slow, "celery-worker-reports@reports2", "reportsApp.count_words") == 0
    control = f"{REPORTS_CELERY} control %s reports.slow -d {SLOW_NODE} --timeout 10"
    cancel = host(slow).run(control, "cancel_consumer")
    assert cancel.rc == 0, cancel.stdout + cancel.stderr
    try:
        assert inspect_queues(slow, REPORTS_CELERY, SLOW_NODE) == set()
        assert submit(10) == [3, "timeout"]
    finally:
        add = host(slow).run(control, "add_consumer")
        assert add.rc == 0, add.stdout + add.stderr
    assert inspect_queues(slow, REPORTS_CELERY, SLOW_NODE) == {"reports.slow"}
    assert submit(60) == [3, {"count": 3, "total": 6, "min": 1, "max": 3}]


def test_a_rolling_restart_of_the_apps_hosts_restarts_its_nodes_and_its_tasks_run() -> None:
    """playbooks/rolling-restart.yml limited to the reports app's worker hosts restarts each
    one's node with the app's own module and configuration (from the host's
    /etc/default/celeryd), waits for its ping, and restarts nothing of the downloader; the
    app's two tasks run afterwards."""
    units = [(name, worker_unit(name, node)) for name in sorted(OTHER_APP_WORKERS) for node in nodes_of(name)]
    assert len(units) == 2, units
    before = {unit: main_pid(*unit) for unit in units}
    downloader = {(name, worker_unit(name, node)) for name in WORKERS for node in nodes_of(name)}
    untouched = {unit: main_pid(*unit) for unit in downloader}
    run_playbook("playbooks/rolling-restart.yml", "-i", INVENTORY, "--limit", ",".join(OTHER_APP_WORKERS))
    after = {unit: main_pid(*unit) for unit in units}
    assert all(0 < after[unit] != before[unit] for unit in units), (before, after)
    assert {unit: main_pid(*unit) for unit in downloader} == untouched
    assert submit(60) == [3, {"count": 3, "total": 6, "min": 1, "max": 3}]


def test_an_apps_credentials_are_refused_on_another_apps_vhost() -> None:
    """The reports app's vhost holds its own three users (passwords generated under
    .secrets/apps/reports/, a directory of mode 0700 with files of mode 0600) and the
    administrator, with the redelivery limit; each of its users logs in to it and is refused on
    the downloader's vhost, and the downloader's worker user is refused on the reports vhost."""
    broker = host(BROKERS[0])
    listed = broker.check_output("rabbitmqctl --quiet list_permissions -p reports")
    on_vhost = {line.split("\t")[0] for line in listed.splitlines()[1:] if line.strip()}
    assert on_vhost == {"reports", "reports-flower", "reports-client", "admin"}, listed
    assert "delivery-limit" in broker.check_output("rabbitmqctl --quiet list_policies -p reports")
    secrets = SECRETS / "apps/reports"
    assert secrets.stat().st_mode & 0o777 == 0o700, oct(secrets.stat().st_mode)
    for path in secrets.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    src = CLIENTS[0]
    for kind, user in {"worker": "reports", "flower": "reports-flower", "client": "reports-client"}.items():
        password = (SECRETS / "apps/reports" / f"rabbitmq_{kind}_password").read_text().split()[0]
        assert amqp_login(src, user, password, vhost="reports") == "open", user
        refused = amqp_login(src, user, password, vhost="downloader")
        assert refused.startswith("refused"), (user, refused)
    refused = amqp_login(src, "downloader", app_password(), vhost="reports")
    assert refused.startswith("refused"), refused


def test_the_apps_client_host_sends_its_tasks_and_may_do_nothing_more() -> None:
    """rclient1, a client host of the reports app (`cluster_app: reports` for a group under
    `clients`): its configuration connects as the app's client user to the app's vhost and
    sends no events; the app's own code there (its docstring's calls) gets both results, each
    from the node of its queue; remote control (`celery -A reportsApp status`) and consuming,
    getting, purging or deleting either queue are refused by RabbitMQ."""
    (client,) = OTHER_APP_CLIENTS
    config = host(client).file("/etc/reports/celeryconfig.py").content_string
    urls = re.findall(r'"pyamqp://([^:@"]+):[^@"]*@[^/"]+/([^"?]+)"', config)
    assert urls and set(urls) == {("reports-client", "reports")}, urls
    assert "task_send_sent_event = False" in config and "no_declare=True" in config, config
    assert submit(60, on=client) == [3, {"count": 3, "total": 6, "min": 1, "max": 3}]
    status = host(client).run(f"timeout 60 {REPORTS_CELERY} status")
    said = status.stdout + status.stderr
    assert status.rc != 0 and "ACCESS_REFUSED" in said and "reports-client" in said, said
    for queue in ("reports.fast", "reports.slow"):
        out = host(client).check_output(
            f"timeout 60 env {REPORTS_ENV} /opt/reports/venv/bin/python -c %s %s reportsApp",
            probe("task_queue_rights.py"),
            queue,
        )
        refusals = json.loads(out.strip().splitlines()[-1])
        assert set(refusals) == {"consume", "get", "purge", "delete"}, refusals
        for what, outcome in refusals.items():
            assert "ACCESS_REFUSED" in outcome and f"queue '{queue}'" in outcome, (what, outcome)


def test_each_app_has_its_own_flower_and_login() -> None:
    """rflower1 runs the reports app's Flower, flower1 the downloader's: each lists only its
    app's worker nodes, each refuses the other's login (one password per app), and a reports
    task sent through the reports Flower's REST API (the tutorial's async-apply call) runs on
    the node of its queue and gives its result."""
    assert len(OTHER_APP_FLOWERS) == 1, "the scenario has no Flower host of the reports app"
    reports_flower, downloader_flower = OTHER_APP_FLOWERS[0], FLOWERS[0]
    reports_login, downloader_login = (
        flower_credentials(reports_flower),
        flower_credentials(downloader_flower),
    )
    assert reports_login != downloader_login
    src = WORKERS[0]  # one of Flower's allowed sources

    def api(flower: str, method: str, path: str, login: str, body: str = "") -> tuple[int, str]:
        return http(src, method, f"https://{flower}:{FLOWER_PORT}/api/{path}", login, body)

    def workers(flower: str, login: str) -> set[str]:
        status, body = api(flower, "GET", "workers?refresh=1", login)
        assert status == 200, body
        return set(json.loads(body))

    assert workers(reports_flower, reports_login) == {FAST_NODE, SLOW_NODE}
    downloader_nodes = workers(downloader_flower, downloader_login)
    assert downloader_nodes and not downloader_nodes & {FAST_NODE, SLOW_NODE}, downloader_nodes
    assert api(reports_flower, "GET", "workers", downloader_login)[0] == 401
    assert api(downloader_flower, "GET", "workers", reports_login)[0] == 401

    body = json.dumps({"args": ["four words in here"]})
    status, sent = api(reports_flower, "POST", "task/async-apply/reportsApp.count_words", reports_login, body)
    assert status == 200, sent
    state, text = flower_task_state(src, json.loads(sent)["task-id"], flower=reports_flower)
    assert state == "SUCCESS", text
    info = json.loads(text)
    assert info.get("worker") == FAST_NODE and info.get("result") == "4", info
