"""Filters of the cluster role: the inventory's list of Celery apps (`cluster_apps`), checked
(validate.yml) and completed with what each entry leaves out (the other roles' defaults)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

KINDS = ("worker", "flower", "client")
KEYS = ("id", "module", "source", "lock", "vhost", "users", "passwords", "queues", "beat_schedule")
BEAT_KEYS = ("task", "every", "args", "kwargs", "queue")
# This project's own app: the entry {id: downloader} without a source.
BUILTIN = {"id": "downloader", "module": "downloaderApp"}
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ID = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# An app's id names a group its services' users join and the directory /etc/ID that becomes
# root:ID 0750: not the name of a system group or directory, nor of the cluster's own services.
RESERVED = frozenset(
    {
        "adm",
        "alternatives",
        "apt",
        "audio",
        "backup",
        "bin",
        "ca-certificates",
        "cdrom",
        "celery",
        "crontab",
        "daemon",
        "default",
        "dialout",
        "dip",
        "disk",
        "docker",
        "erlang",
        "fax",
        "firewalld",
        "floppy",
        "flower",
        "games",
        "gnats",
        "input",
        "irc",
        "kmem",
        "kvm",
        "list",
        "lp",
        "lxd",
        "mail",
        "man",
        "messagebus",
        "netdev",
        "network",
        "news",
        "nobody",
        "node-exporter",
        "nogroup",
        "operator",
        "pki",
        "plugdev",
        "polkitd",
        "prometheus",
        "proxy",
        "rabbitmq",
        "render",
        "root",
        "sasl",
        "security",
        "selinux",
        "sgx",
        "shadow",
        "src",
        "ssh",
        "ssl",
        "ssl-cert",
        "staff",
        "sudo",
        "sys",
        "systemd",
        "systemd-journal",
        "systemd-network",
        "systemd-resolve",
        "systemd-timesync",
        "tape",
        "tty",
        "users",
        "utmp",
        "uucp",
        "video",
        "voice",
        "wheel",
        "www-data",
    }
)
# The first app's users and passwords are cluster_broker_users / cluster_broker_passwords.
OTHERS_ONLY = ("users", "passwords")


def _label(index: int, app: Any) -> str:
    name = app.get("id") if isinstance(app, Mapping) else None
    return f"cluster_apps[{index}]" + (f" ({name})" if isinstance(name, str) and name else "")


def _kinds_problems(where: str, key: str, value: Any, secret: bool) -> list[str]:
    if not isinstance(value, Mapping) or set(value) != set(KINDS):
        return [f"{where}: {key} must map exactly worker, flower and client to a name"]
    empty = [kind for kind in KINDS if not isinstance(value[kind], str) or not value[kind]]
    if empty:
        what = "password" if secret else "user name"
        return [f"{where}: {key}.{', '.join(empty)} must be a non-empty {what}"]
    return []


def _unknown_keys(where: str, entry: Mapping[str, Any], known: tuple[str, ...]) -> list[str]:
    unknown = sorted(set(entry) - set(known))
    return [f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}"] if unknown else []


def _beat_problems(where: str, schedule: Any, queues: Any) -> list[str]:
    if not isinstance(schedule, Mapping):
        return [f"{where}: beat_schedule must map entry names to {{task: NAME, every: SECONDS}}"]
    problems = []
    for name, entry in schedule.items():
        here = f"{where}: beat_schedule.{name}"
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: beat_schedule entry names must be non-empty strings")
            continue
        if not isinstance(entry, Mapping):
            problems.append(f"{here} must be a mapping such as {{task: myApp.cleanup, every: 60}}")
            continue
        problems += _unknown_keys(here, entry, BEAT_KEYS)
        if not isinstance(entry.get("task"), str) or not entry["task"]:
            problems.append(f"{here}: task must be the name of a task of the app")
        every = entry.get("every")
        if (
            isinstance(every, bool)
            or not isinstance(every, (int, float))
            or not math.isfinite(every)
            or every < 1
        ):
            problems.append(f"{here}: every must be a number of seconds, at least 1 (got {every!r})")
        if "args" in entry and not isinstance(entry["args"], list):
            problems.append(f"{here}: args must be a list")
        kwargs = entry.get("kwargs", {})
        if not isinstance(kwargs, Mapping) or not all(isinstance(key, str) for key in kwargs):
            problems.append(f"{here}: kwargs must be a mapping of argument names")
        if "queue" in entry and (not isinstance(queues, list) or entry["queue"] not in queues):
            problems.append(f"{here}: queue {entry['queue']!r} is not one of the app's queues")
    return problems


def cluster_apps_problems(
    apps: Any, lock_queue: str, first_users: Mapping[str, str] | None = None
) -> list[str]:
    """What is wrong with APPS (`cluster_apps`), one message per fault; [] when nothing is.
    LOCK_QUEUE: the schedulers' lock (cluster_beat_lock_queue), which no app may name as a task
    queue. FIRST_USERS: the first app's users (cluster_broker_users), when they can be read yet."""
    if not isinstance(apps, list) or not apps:
        return ["cluster_apps must be a list of apps (at least one: - id: downloader)"]
    problems: list[str] = []
    for index, app in enumerate(apps):
        where = _label(index, app)
        if not isinstance(app, Mapping):
            problems.append(f"{where} must be a mapping such as {{id: myapp}}, not {app!r}")
            continue
        problems += _unknown_keys(where, app, KEYS)
        if not isinstance(app.get("id"), str) or not ID.match(app["id"]):
            problems.append(
                f"{where}: id must be 1 to 32 of a-z, 0-9, _ and -, starting with a letter "
                f"(got {app.get('id')!r})"
            )
        if app.get("id") in RESERVED:
            problems.append(
                f"{where}: the id {app['id']} is a system group or /etc directory (or the name of "
                "a service of the cluster): the app's group and /etc/ID would take it over"
            )
        builtin = app.get("id") == BUILTIN["id"] and "source" not in app
        if builtin and "queues" in app:
            problems.append(
                f"{where}: the downloader's queue is celery, fixed by its own configuration: "
                "`queues` is for an app of your own"
            )
        for key in ("module", "source"):
            if key not in app and not builtin:
                problems.append(
                    f"{where}: {key} is required (only the downloader, {{id: downloader}}, comes "
                    "with this project)"
                )
        if "module" in app and (not isinstance(app["module"], str) or not MODULE.match(app["module"])):
            problems.append(
                f"{where}: module must be a Python module name such as myApp (got {app['module']!r})"
            )
        for key in ("source", "lock"):
            if key in app and (not isinstance(app[key], str) or not app[key].startswith("/")):
                problems.append(
                    f"{where}: {key} must be an absolute path on the controller (got {app[key]!r})"
                )
        if "vhost" in app and (not isinstance(app["vhost"], str) or not app["vhost"]):
            problems.append(f"{where}: vhost must be a non-empty string")
        queues = app.get("queues", ["celery"])
        if (
            not isinstance(queues, list)
            or not queues
            or not all(isinstance(name, str) and name for name in queues)
        ):
            problems.append(f"{where}: queues must be a non-empty list of queue names")
        elif lock_queue in queues:
            problems.append(f"{where}: the queue {lock_queue} is the cluster's (the beat lock)")
        if "beat_schedule" in app:
            if builtin:
                problems.append(
                    f"{where}: the downloader has no periodic task: `beat_schedule` is for an app of your own"
                )
            else:
                problems += _beat_problems(where, app["beat_schedule"], queues)
        for key in OTHERS_ONLY:
            if key not in app:
                continue
            if index == 0:
                problems.append(f"{where}: the first app's {key} are cluster_broker_{key}: set that instead")
            else:
                problems += _kinds_problems(where, key, app[key], secret=key == "passwords")
    if problems:
        return problems
    completed = cluster_apps_complete(apps, first_users, "")
    for key in ("id", "vhost"):
        values = [app[key] for app in completed]
        twice = sorted({value for value in values if values.count(value) > 1})
        if twice:
            problems.append(f"cluster_apps: two apps have the {key} {', '.join(twice)}")
    users = [name for app in completed for name in app["users"].values()]
    twice = sorted({name for name in users if users.count(name) > 1})
    if twice:
        problems.append(f"cluster_apps: the broker user(s) {', '.join(twice)} serve two apps or kinds")
    if "guest" in users:
        problems.append("cluster_apps: no app's broker user may be `guest`")
    return problems


def cluster_apps_complete(
    apps: list[Mapping[str, Any]], first_users: Mapping[str, str] | None, secrets_dir: str
) -> list[dict[str, Any]]:
    """APPS with what each entry leaves out: `builtin` (this project's downloader: no source,
    which the celery_app role finds), its module (downloaderApp for the downloader), lock
    (SOURCE/requirements.lock), vhost (its id), queues ([celery]), beat_schedule ({}),
    users (ID, ID-flower, ID-client; for the first app FIRST_USERS), `secrets_dir`, the
    controller directory of the app's generated secrets (SECRETS_DIR for the first app, whose
    files predate the others, SECRETS_DIR/apps/ID for the others) and, for every app but the
    first, the files its missing broker passwords are generated into (there);
    `passwords` only where the entry gives them."""
    completed = []
    for index, app in enumerate(apps):
        app_id = app["id"]
        users = dict(app.get("users") or {k: app_id if k == "worker" else f"{app_id}-{k}" for k in KINDS})
        if index == 0 and first_users is not None:
            users = dict(first_users)
        builtin = app_id == BUILTIN["id"] and "source" not in app
        source = app.get("source", "")
        secrets = secrets_dir if index == 0 else f"{secrets_dir}/apps/{app_id}"
        entry: dict[str, Any] = {
            "id": app_id,
            "builtin": builtin,
            "module": app.get("module", BUILTIN["module"] if builtin else ""),
            "source": source,
            "lock": app.get("lock", f"{source}/requirements.lock" if source else ""),
            "vhost": app.get("vhost", app_id),
            "users": users,
            "queues": list(app.get("queues", ["celery"])),
            "passwords": dict(app.get("passwords") or {}),
            "beat_schedule": dict(app.get("beat_schedule") or {}),
            "secrets_dir": secrets,
            "password_files": {}
            if index == 0
            else {kind: f"{secrets}/rabbitmq_{kind}_password" for kind in KINDS},
        }
        completed.append(entry)
    return completed


def _true(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "no", "off", "0", "n", "f", "")
    return bool(value)


def cluster_apps_unscheduled(apps: Any, workers: Any, default_app: str) -> list[str]:
    """The ids of APPS that have a beat_schedule but no host among WORKERS (their variables:
    cluster_app, default DEFAULT_APP; celery_worker_beat, default true) to run the scheduler."""
    runnable = {
        worker.get("cluster_app", default_app)
        for worker in workers
        if _true(worker.get("celery_worker_beat", True))
    }
    return [app["id"] for app in apps if app.get("beat_schedule") and app["id"] not in runnable]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "cluster_apps_problems": cluster_apps_problems,
            "cluster_apps_complete": cluster_apps_complete,
            "cluster_apps_unscheduled": cluster_apps_unscheduled,
        }
