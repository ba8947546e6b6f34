"""remove-worker.yml's filter (playbooks/filter_plugins/worker_queues.py): the task queues that
draining the limited worker hosts would leave without a consumer."""

from __future__ import annotations

from file_module import load

plugin = load("playbooks/filter_plugins/worker_queues.py")
unserved = plugin.drain_unserved_queues

# As the cluster role completes them (cluster_apps_resolved): every entry has its queues.
APPS = [
    {"id": "downloader", "queues": ["celery"]},
    {"id": "reports", "queues": ["reports.fast", "reports.slow"]},
]
# Two downloader hosts (every queue of the app); reports split over two groups, one host
# serving both of its queues.
WORKERS = [
    ["worker1", "downloader", []],
    ["worker2", "downloader", []],
    ["rfast", "reports", ["reports.fast"]],
    ["rslow", "reports", ["reports.slow"]],
    ["rboth", "reports", []],
]


def test_a_queue_another_host_of_the_app_serves_is_not_named() -> None:
    assert unserved(WORKERS, ["worker1"], APPS) == []
    assert unserved(WORKERS, ["rfast", "rslow"], APPS) == []


def test_the_last_host_of_a_queue_is_named_with_its_app() -> None:
    workers = [w for w in WORKERS if w[0] != "rboth"]
    slow = {"app": "reports", "queue": "reports.slow", "hosts": ["rslow"]}
    assert unserved(workers, ["rslow"], APPS) == [slow]


def test_a_host_that_serves_every_queue_of_its_app_leaves_each_of_them() -> None:
    workers = [w for w in WORKERS if w[0] != "rfast"]
    fast = {"app": "reports", "queue": "reports.fast", "hosts": ["rboth"]}
    assert unserved(workers, ["rboth"], APPS) == [fast]
    assert unserved(workers, ["rboth", "rslow"], APPS) == [
        {"app": "reports", "queue": "reports.fast", "hosts": ["rboth"]},
        {"app": "reports", "queue": "reports.slow", "hosts": ["rboth", "rslow"]},
    ]


def test_hosts_that_name_no_queue_serve_every_queue_of_their_app() -> None:
    assert unserved(WORKERS, ["worker1", "worker2"], APPS) == [
        {"app": "downloader", "queue": "celery", "hosts": ["worker1", "worker2"]}
    ]


def test_hosts_of_another_app_do_not_serve_a_queue_of_the_same_name() -> None:
    apps = [{"id": "a", "queues": ["jobs"]}, {"id": "b", "queues": ["jobs"]}]
    workers = [["a1", "a", []], ["b1", "b", []]]
    assert unserved(workers, ["a1"], apps) == [{"app": "a", "queue": "jobs", "hosts": ["a1"]}]


def test_nothing_drained_leaves_nothing() -> None:
    assert unserved(WORKERS, [], APPS) == []
