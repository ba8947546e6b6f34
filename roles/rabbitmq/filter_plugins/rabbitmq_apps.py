"""Filters of the rabbitmq role: the vhosts, users and policies of every Celery app of the
cluster (`rabbitmq_apps`, the cluster role's completed `cluster_apps`), as the
rabbitmq_definitions module takes them.

Each app has its vhost and three users, each with rights on that vhost only, and only what
its kind of host needs (the README's table). RabbitMQ's rights are regular expressions over
the names of exchanges and queues: configure (declare, delete), write (publish to an
exchange, bind a queue), read (consume, purge, bind from an exchange).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

KINDS = ("worker", "flower", "client")
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Results: a caller's rpc:// reply queue, named after a UUID. Events: the celeryev exchange and
# a monitor's own queue on it. Control: the broadcast exchange of remote control, its reply
# exchange and a caller's reply queue.
RESULTS = [UUID]
EVENTS = ["celeryev", rf"celeryev\.{UUID}"]
CONTROL = [r"celery\.pidbox", r"reply\.celery\.pidbox", rf"{UUID}\.reply\.celery\.pidbox"]


def _any(names: Sequence[str]) -> str:
    return "^(" + "|".join(names) + ")$"


def rabbitmq_app_rights(queues: Sequence[str], kind: str) -> dict[str, str]:
    """The rights of KIND's user on an app's vhost whose tasks go to TASK_EXCHANGES (and
    Celery's delayed-delivery exchanges)."""
    tasks = [re.escape(name) for name in queues] + ["celery_delayed_[0-9]+"]
    monitor = EVENTS + CONTROL
    if kind == "worker":
        return {"configure": ".*", "write": ".*", "read": ".*"}
    if kind == "flower":
        return {
            "configure": _any(monitor + RESULTS),
            "write": _any(tasks + monitor),
            "read": _any(monitor + RESULTS),
        }
    if kind == "client":
        return {"configure": _any(RESULTS), "write": _any(tasks), "read": _any(RESULTS)}
    raise ValueError(f"no such kind of app user: {kind!r}")


def rabbitmq_app_password_files(apps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The controller files of the passwords to generate: those of every app whose entry gives
    none, in the order rabbitmq_app_definitions reads them."""
    return [
        app["password_files"][kind]
        for app in apps
        for kind in KINDS
        if app["password_files"] and kind not in app["passwords"]
    ]


def rabbitmq_app_definitions(
    apps: Sequence[Mapping[str, Any]],
    first_users: Mapping[str, str],
    first_passwords: Mapping[str, str],
    generated: Sequence[str],
    admin: Mapping[str, str],
    policy: Mapping[str, Any],
) -> dict[str, list[Any]]:
    """{vhosts, users, policies} of APPS: the first app's users are FIRST_USERS with
    FIRST_PASSWORDS; another app's passwords are its own or, in order, the GENERATED ones (of
    rabbitmq_app_password_files). ADMIN ({name, password}) gets every right on every app's
    vhost; POLICY ({name, definition}) is set on each vhost for all its queues."""
    left = list(generated)
    users: list[dict[str, Any]] = []
    for index, app in enumerate(apps):
        for kind in KINDS:
            if index == 0:
                name, password = first_users[kind], first_passwords[kind]
            else:
                name = app["users"][kind]
                password = app["passwords"][kind] if kind in app["passwords"] else left.pop(0)
            rights = rabbitmq_app_rights(app["queues"], kind)
            users.append(
                {
                    "name": name,
                    "password": password,
                    "tags": [],
                    "permissions": [{**rights, "vhost": app["vhost"]}],
                }
            )
    if left:
        raise ValueError(f"{len(left)} generated password(s) left over: the apps changed")
    worker = rabbitmq_app_rights([], "worker")
    users.append(
        {
            "name": admin["name"],
            "password": admin["password"],
            "tags": ["administrator"],
            "permissions": [{**worker, "vhost": app["vhost"]} for app in apps],
        }
    )
    return {
        "vhosts": [app["vhost"] for app in apps],
        "users": users,
        "policies": [
            {
                "vhost": app["vhost"],
                "name": policy["name"],
                "pattern": ".*",
                "apply-to": "queues",
                "priority": 0,
                "definition": dict(policy["definition"]),
            }
            for app in apps
        ],
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rabbitmq_app_rights": rabbitmq_app_rights,
            "rabbitmq_app_password_files": rabbitmq_app_password_files,
            "rabbitmq_app_definitions": rabbitmq_app_definitions,
        }
