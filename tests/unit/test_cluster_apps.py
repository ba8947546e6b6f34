"""The inventory's list of apps (roles/cluster/filter_plugins/cluster_apps.py) and the broker
definitions made of it (roles/rabbitmq/filter_plugins/rabbitmq_apps.py): what validate.yml
refuses, what an entry that leaves keys out becomes, and the rights each kind of user gets."""

from __future__ import annotations

import re
from typing import Any

import pytest
from file_module import load

apps_filters = load("roles/cluster/filter_plugins/cluster_apps.py")
broker_filters = load("roles/rabbitmq/filter_plugins/rabbitmq_apps.py")
LOCK = "celery-cluster.beat-lock"


def problems(apps: Any, first_users: dict[str, str] | None = None) -> list[str]:
    found: list[str] = apps_filters.cluster_apps_problems(apps, LOCK, first_users)
    return found


complete = apps_filters.cluster_apps_complete
FIRST_USERS = {"worker": "downloader", "flower": "downloader-flower", "client": "downloader-client"}
FIRST_PASSWORDS = {"worker": "w" * 32, "flower": "f" * 32, "client": "c" * 32}
ADMIN = {"name": "admin", "password": "a" * 32}


def app(app_id: str, **keys: Any) -> dict[str, Any]:
    """An entry of an app of the operator's own: its module and source, and KEYS."""
    return {"id": app_id, "module": f"{app_id}App", "source": f"/src/{app_id}", **keys}


POLICY = {"name": "downloader-delivery-limit", "definition": {"delivery-limit": 10}}


def test_the_default_list_is_sound_and_keeps_the_downloaders_names() -> None:
    apps = [{"id": "downloader"}]
    assert problems(apps) == []
    assert problems(apps, FIRST_USERS) == []
    (app,) = complete(apps, FIRST_USERS, "/s")
    assert app == {
        "id": "downloader",
        "builtin": True,
        "module": "downloaderApp",
        "source": "",
        "lock": "",
        "vhost": "downloader",
        "users": FIRST_USERS,
        "queues": ["celery"],
        "passwords": {},
        "beat_schedule": {},
        "secrets_dir": "/s",
        "password_files": {},
    }


def test_a_second_app_gets_its_own_names_and_password_files() -> None:
    apps = [{"id": "downloader"}, app("reports", queues=["reports.fast", "reports.slow"])]
    assert problems(apps, FIRST_USERS) == []
    second = complete(apps, FIRST_USERS, "/s")[1]
    assert (second["builtin"], second["module"], second["lock"]) == (
        False,
        "reportsApp",
        "/src/reports/requirements.lock",
    )
    assert second["vhost"] == "reports"
    assert second["users"] == {"worker": "reports", "flower": "reports-flower", "client": "reports-client"}
    assert second["secrets_dir"] == "/s/apps/reports"
    assert second["password_files"]["client"] == "/s/apps/reports/rabbitmq_client_password"
    assert second["queues"] == ["reports.fast", "reports.slow"]
    assert second["beat_schedule"] == {}


def test_a_schedule_is_kept_as_given() -> None:
    schedule = {"tick": {"task": "reportsApp.tick", "every": 4, "args": [1], "queue": "reports.fast"}}
    apps = [{"id": "downloader"}, app("reports", queues=["reports.fast"], beat_schedule=schedule)]
    assert problems(apps, FIRST_USERS) == []
    assert complete(apps, FIRST_USERS, "/s")[1]["beat_schedule"] == schedule


@pytest.mark.parametrize(
    ("apps", "said"),
    [
        ([], "must be a list of apps"),
        ("downloader", "must be a list of apps"),
        (["downloader"], r"cluster_apps\[0\] must be a mapping"),
        ([{"id": "Downloader"}], r"cluster_apps\[0\] \(Downloader\): id must be"),
        ([{"name": "x"}], r"unknown key\(s\) name"),
        ([app("a"), app("b", vhots="b")], r"cluster_apps\[1\] \(b\): unknown key\(s\) vhots"),
        ([app("a", vhost="")], "vhost must be a non-empty string"),
        ([app("shadow")], r"the id shadow is a system group or /etc directory"),
        ([app("rabbitmq")], r"the id rabbitmq is a system group"),
        ([{"id": "downloader", "queues": ["tasks"]}], "`queues` is for an app of your own"),
        ([{"id": "downloader"}, {"id": "reports"}], r"\(reports\): module is required"),
        ([{"id": "downloader"}, {"id": "reports", "module": "r"}], r"\(reports\): source is required"),
        ([app("a", module="my-app")], "module must be a Python module name"),
        ([app("a", source="src/a")], "source must be an absolute path"),
        ([app("a", lock="")], "lock must be an absolute path"),
        ([app("a", queues=[])], "queues must be a non-empty list"),
        ([app("a", queues="celery")], "queues must be a non-empty list"),
        ([app("a", users={"worker": "x"})], "the first app's users are cluster_broker_users"),
        (
            [app("a"), app("b", users={"worker": "x"})],
            "users must map exactly worker, flower and client",
        ),
        (
            [app("a"), app("b", passwords={"worker": "", "flower": "p", "client": "p"})],
            "passwords.worker must be a non-empty password",
        ),
        ([app("a", queues=[LOCK])], "is the cluster's .the beat lock."),
        ([{"id": "downloader", "beat_schedule": {}}], "the downloader has no periodic task"),
        ([app("a", beat_schedule=[])], "beat_schedule must map entry names"),
        ([app("a", beat_schedule={"t": "a.t"})], r"beat_schedule.t must be a mapping"),
        ([app("a", beat_schedule={"t": {"every": 5}})], r"beat_schedule.t: task must be"),
        ([app("a", beat_schedule={"t": {"task": "a.t"}})], r"beat_schedule.t: every must be"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": 0.5}})], "at least 1"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": "5"}})], "every must be a number"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": float("nan")}})], "every must be a number"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": float("inf")}})], "every must be a number"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": 5, "kwargs": {1: 2}}})], "kwargs must be a"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": 5, "cron": 1}})], r"unknown key\(s\) cron"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": 5, "args": "x"}})], "args must be a list"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": 5, "kwargs": []}})], "kwargs must be a"),
        ([app("a", beat_schedule={"t": {"task": "a.t", "every": 5, "queue": "q"}})], "'q' is not one of"),
        ([app("a"), app("a")], "two apps have the id a"),
        ([app("a"), app("b", vhost="a")], "two apps have the vhost a"),
        (
            [app("a"), app("b", users={"worker": "a", "flower": "b-f", "client": "b-c"})],
            "the broker user.s. a serve two apps",
        ),
        (
            [app("a"), app("b", users={"worker": "guest", "flower": "b-f", "client": "b-c"})],
            "may be `guest`",
        ),
    ],
)
def test_a_bad_list_is_refused_with_what_is_wrong(apps: Any, said: str) -> None:
    found = problems(apps)
    assert any(re.search(said, problem) for problem in found), found


def test_an_app_with_a_schedule_needs_a_worker_host_that_may_run_it() -> None:
    apps = [{"id": "downloader"}, app("reports", beat_schedule={"t": {"task": "r.t", "every": 5}})]
    unscheduled = apps_filters.cluster_apps_unscheduled
    assert unscheduled(apps, [{}], "downloader") == ["reports"]
    assert unscheduled(apps, [{"cluster_app": "reports"}], "downloader") == []
    assert unscheduled(apps, [{"cluster_app": "reports", "celery_worker_beat": "false"}], "downloader") == [
        "reports"
    ]
    off = [{"cluster_app": "reports", "celery_worker_beat": False}, {"cluster_app": "reports"}]
    assert unscheduled(apps, off, "downloader") == []


def test_the_first_apps_users_count_against_the_others() -> None:
    apps = [app("a"), app("b")]
    assert problems(apps) == []
    assert "serve two apps" in " ".join(problems(apps, {"worker": "b", "flower": "x", "client": "y"}))


def test_the_downloaders_rights_are_those_of_the_single_app_release() -> None:
    """The first app's users keep the rights they had when the downloader was the only app:
    a re-run of an existing cluster changes no permission."""
    uuid = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    monitor = rf"celeryev|celeryev\.{uuid}|celery\.pidbox|reply\.celery\.pidbox|{uuid}\.reply\.celery\.pidbox"
    rights = broker_filters.rabbitmq_app_rights
    assert rights(["celery"], "worker") == {"configure": ".*", "write": ".*", "read": ".*"}
    assert rights(["celery"], "flower") == {
        "configure": f"^({monitor}|{uuid})$",
        "write": f"^(celery|celery_delayed_[0-9]+|{monitor})$",
        "read": f"^({monitor}|{uuid})$",
    }
    assert rights(["celery"], "client") == {
        "configure": f"^({uuid})$",
        "write": "^(celery|celery_delayed_[0-9]+)$",
        "read": f"^({uuid})$",
    }


def test_a_client_may_send_to_its_apps_exchanges_only() -> None:
    write = re.compile(broker_filters.rabbitmq_app_rights(["reports.fast"], "client")["write"])
    assert write.match("reports.fast")
    assert not write.match("reportsXfast")
    assert not write.match("celery")


def test_each_app_has_its_vhost_users_and_policy_and_the_admin_has_them_all() -> None:
    apps = complete(
        [
            {"id": "downloader"},
            app("reports", passwords={"worker": "W" * 20, "flower": "F" * 20, "client": "C" * 20}),
            app("mail", vhost="mail-v"),
        ],
        FIRST_USERS,
        "/s",
    )
    files = broker_filters.rabbitmq_app_password_files(apps)
    assert files == [f"/s/apps/mail/rabbitmq_{kind}_password" for kind in ("worker", "flower", "client")]
    generated = ["g1" * 10, "g2" * 10, "g3" * 10]
    wanted = broker_filters.rabbitmq_app_definitions(
        apps, FIRST_USERS, FIRST_PASSWORDS, generated, ADMIN, POLICY
    )
    assert wanted["vhosts"] == ["downloader", "reports", "mail-v"]
    users = {user["name"]: user for user in wanted["users"]}
    assert users["downloader"]["password"] == "w" * 32
    assert users["reports-client"]["password"] == "C" * 20
    assert users["mail-flower"]["password"] == "g2" * 10
    assert [p["vhost"] for p in users["reports-client"]["permissions"]] == ["reports"]
    assert [p["vhost"] for p in users["admin"]["permissions"]] == ["downloader", "reports", "mail-v"]
    assert users["admin"]["tags"] == ["administrator"]
    assert [(p["vhost"], p["definition"]) for p in wanted["policies"]] == [
        (vhost, {"delivery-limit": 10}) for vhost in ("downloader", "reports", "mail-v")
    ]
    with pytest.raises(ValueError, match="left over"):
        broker_filters.rabbitmq_app_definitions(
            apps, FIRST_USERS, FIRST_PASSWORDS, [*generated, "x"], ADMIN, POLICY
        )
