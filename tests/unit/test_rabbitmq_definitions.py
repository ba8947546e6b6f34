"""The rabbitmq_definitions module (plugins/modules/rabbitmq_definitions.py): its comparison of
exported definitions with the wanted ones, and module runs against a stand-in rabbitmqctl that
keeps the cluster's definitions in a file."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from file_module import load
from module_run import run_module, stand_in

plugin = load("plugins/modules/rabbitmq_definitions.py")

SHA256 = "rabbit_password_hashing_sha256"
# Made by RabbitMQ 3.10.8 (`rabbitmqctl add_user fixture-user "correct horse"`, then
# `export_definitions`): the hash a real broker stores, not one this file computed.
BROKER_HASH = "snBZdqPMFmNxYD2DsTSIHrFW0OjxSwthrfxIeOl0Qam5wV6r"


def rabbit_hash(password: str, salt: bytes = b"\x01\x02\x03\x04", digest: Any = hashlib.sha256) -> str:
    return base64.b64encode(salt + digest(salt + password.encode()).digest()).decode()


PERMS = [{"vhost": "downloader", "configure": ".*", "write": ".*", "read": ".*"}]
WANTED: dict[str, Any] = {
    "vhosts": ["downloader"],
    "users": [
        {"name": "downloader", "password": "app-pw", "tags": [], "permissions": PERMS},
        {"name": "admin", "password": "admin-pw", "tags": ["administrator"], "permissions": PERMS},
    ],
    "absent_users": ["guest"],
    "policies": [
        {
            "vhost": "downloader",
            "name": "downloader-delivery-limit",
            "pattern": ".*",
            "apply-to": "queues",
            "priority": 0,
            "definition": {"delivery-limit": 10},
        }
    ],
}
ALL_KEYS = [
    "vhost:downloader",
    "user:downloader",
    "user:admin",
    "user:guest",
    "policy:downloader/downloader-delivery-limit",
]


def exported() -> dict[str, Any]:
    """Definitions as a converged broker exports them (shape of RabbitMQ 3.10's output)."""
    perm = {"configure": ".*", "read": ".*", "vhost": "downloader", "write": ".*"}
    return {
        "rabbit_version": "3.10.8",
        "users": [
            {
                "name": "admin",
                "hashing_algorithm": SHA256,
                "password_hash": rabbit_hash("admin-pw"),
                "tags": ["administrator"],
                "limits": {},
            },
            {
                "name": "downloader",
                "hashing_algorithm": SHA256,
                "password_hash": rabbit_hash("app-pw", salt=b"\xff\x00\x10\x80"),
                "tags": [],
                "limits": {},
            },
        ],
        "vhosts": [{"name": "downloader"}, {"name": "/"}],
        "permissions": [{**perm, "user": "downloader"}, {**perm, "user": "admin"}],
        "topic_permissions": [],
        "policies": [
            {
                "vhost": "downloader",
                "name": "downloader-delivery-limit",
                "pattern": ".*",
                "apply-to": "queues",
                "definition": {"delivery-limit": 10},
                "priority": 0,
            }
        ],
        "queues": [],
    }


def test_password_hash_made_by_a_broker_matches_its_password_only() -> None:
    assert plugin.password_matches(BROKER_HASH, SHA256, "correct horse")
    assert not plugin.password_matches(BROKER_HASH, SHA256, "correct horse ")
    assert not plugin.password_matches(BROKER_HASH, SHA256, "")


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("rabbit_password_hashing_sha512", hashlib.sha512),
        ("rabbit_password_hashing_md5", hashlib.md5),
    ],
)
def test_the_other_hashing_algorithms(algorithm: str, digest: Any) -> None:
    stored = rabbit_hash("pw", digest=digest)
    assert plugin.password_matches(stored, algorithm, "pw")
    assert not plugin.password_matches(stored, algorithm, "other")
    assert not plugin.password_matches(stored, SHA256, "pw")


@pytest.mark.parametrize("stored", ["", "not base64!", "AAE=", rabbit_hash("pw")[:-8]])
def test_unknown_algorithm_or_malformed_hash_never_matches(stored: str) -> None:
    assert not plugin.password_matches(rabbit_hash("pw"), "some_future_algorithm", "pw")
    assert not plugin.password_matches(stored, SHA256, "pw")


def drift(defs: dict[str, Any], wanted: dict[str, Any] = WANTED) -> list[str]:
    return list(plugin.differences(defs, wanted))


def test_a_converged_broker_has_no_drift() -> None:
    assert plugin.differences(exported(), WANTED) == {}


def change(edit: Any) -> list[str]:
    defs = copy.deepcopy(exported())
    edit(defs)
    return drift(defs)


def user(defs: dict[str, Any], name: str) -> dict[str, Any]:
    return next(u for u in defs["users"] if u["name"] == name)


GUEST = {"name": "guest", "hashing_algorithm": SHA256, "password_hash": rabbit_hash("guest"), "tags": []}


def test_each_difference_names_its_object_only() -> None:
    assert change(lambda d: d.update(vhosts=[{"name": "/"}])) == ["vhost:downloader"]
    assert change(lambda d: user(d, "downloader").update(password_hash=rabbit_hash("old"))) == [
        "user:downloader"
    ]
    assert change(lambda d: user(d, "admin").update(tags=["management"])) == ["user:admin"]
    assert change(lambda d: user(d, "admin").update(tags=[])) == ["user:admin"]
    assert change(lambda d: d["users"].remove(user(d, "admin"))) == ["user:admin"]
    assert change(lambda d: d["users"].append(GUEST)) == ["user:guest"]
    assert change(lambda d: d["policies"][0]["definition"].update({"delivery-limit": 5})) == [
        "policy:downloader/downloader-delivery-limit"
    ]
    assert change(lambda d: d["policies"][0].update(pattern="^celery$")) == [
        "policy:downloader/downloader-delivery-limit"
    ]
    assert change(lambda d: d.update(policies=[])) == ["policy:downloader/downloader-delivery-limit"]


def test_permissions_are_the_whole_set() -> None:
    other = {"user": "downloader", "vhost": "/", "configure": "", "write": "", "read": ".*"}
    assert change(lambda d: d["permissions"].append(other)) == ["user:downloader"]
    assert change(lambda d: d["permissions"][0].update(write="^$")) == ["user:downloader"]
    assert change(lambda d: d.update(permissions=d["permissions"][1:])) == ["user:downloader"]
    topic = {"user": "admin", "vhost": "downloader", "exchange": "amq.topic", "write": ".*", "read": ".*"}
    assert change(lambda d: d["topic_permissions"].append(topic)) == ["user:admin"]


def test_tags_as_one_string_from_older_brokers() -> None:
    assert change(lambda d: user(d, "admin").update(tags="administrator")) == []
    assert change(lambda d: user(d, "downloader").update(tags="")) == []
    assert change(lambda d: user(d, "downloader").update(tags="monitoring")) == ["user:downloader"]


def test_guest_may_stay_when_not_listed_absent() -> None:
    defs = exported()
    defs["users"].append(GUEST)
    assert drift(defs, {**WANTED, "absent_users": []}) == []


# A stand-in rabbitmqctl keeping the definitions in the JSON file $DEFS: export, import (of a
# file, merged by name as RabbitMQ merges; logged with the file's mode), clear_permissions,
# clear_topic_permissions, delete_user; every call logged to $DEFS.log. Exit 69 when $DEFS
# is missing (a node that does not answer).
RABBITMQCTL = """#!/usr/bin/env python3
import json, os, sys
path = os.environ["DEFS"]
args = [a for a in sys.argv[1:] if a != "--quiet"]
with open(path + ".log", "a") as log:
    log.write(" ".join(args) + "\\n")
if not os.path.exists(path):
    print("Error: unable to perform an operation on node", file=sys.stderr)
    sys.exit(69)
defs = json.load(open(path))
if args[0] == "export_definitions":
    print(json.dumps(defs))
    sys.exit(0)
if args[0] == "import_definitions":
    new = json.load(open(args[1]))
    with open(path + ".log", "a") as log:
        log.write("mode %o\\n" % (os.stat(args[1]).st_mode & 0o777))
    keys = {"vhosts": ("name",), "users": ("name",), "permissions": ("user", "vhost"),
            "policies": ("vhost", "name")}
    for kind, key in keys.items():
        for item in new.get(kind, []):
            defs[kind] = [o for o in defs.get(kind, []) if [o[k] for k in key] != [item[k] for k in key]]
            defs[kind].append(item)
elif args[0] in ("clear_permissions", "clear_topic_permissions"):
    kind = args[0][len("clear_"):]
    defs[kind] = [p for p in defs[kind] if (p["vhost"], p["user"]) != (args[2], args[3])]
elif args[0] == "delete_user":
    defs["users"] = [u for u in defs["users"] if u["name"] != args[1]]
json.dump(defs, open(path, "w"))
"""


def run(tmp_path: Path, defs: dict[str, Any] | None, check: bool = False) -> dict[str, Any]:
    stand_in(tmp_path / "bin", "rabbitmqctl", RABBITMQCTL)
    state = tmp_path / "defs.json"
    if defs is not None and not state.exists():
        state.write_text(json.dumps(defs))
    (tmp_path / "import").mkdir(exist_ok=True)
    params = {**WANTED, "import_dir": str(tmp_path / "import")}
    return run_module("rabbitmq_definitions", tmp_path, params, check=check, env={"DEFS": str(state)})


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "defs.json.log").read_text().splitlines()


def test_a_converged_broker_is_read_once_and_left_alone(tmp_path: Path) -> None:
    result = run(tmp_path, exported())
    assert result["changed"] is False and result["differed"] == []
    assert calls(tmp_path) == ["export_definitions -"]


def test_a_new_broker_gets_everything_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    empty = {"users": [GUEST], "vhosts": [{"name": "/"}], "permissions": [], "policies": []}
    result = run(tmp_path, empty)
    assert result["changed"] is True
    assert result["differed"] == ALL_KEYS
    assert calls(tmp_path)[0] == "export_definitions -"
    assert calls(tmp_path)[1].startswith(f"import_definitions {tmp_path / 'import'}/")
    assert calls(tmp_path)[2:] == ["mode 600", "delete_user guest", "export_definitions -"]
    assert not list((tmp_path / "import").iterdir())
    assert drift(json.loads((tmp_path / "defs.json").read_text())) == []
    assert run(tmp_path, None)["changed"] is False


def test_a_password_changes_only_its_hash_and_nothing_secret_is_shown(tmp_path: Path) -> None:
    defs = exported()
    user(defs, "downloader")["password_hash"] = rabbit_hash("old-pw")
    admin_hash = user(defs, "admin")["password_hash"]
    result = run(tmp_path, defs)
    assert result["differed"] == ["user:downloader"]
    assert result["diff"]["before"] == "user:downloader: password\n"
    after = json.loads((tmp_path / "defs.json").read_text())
    assert plugin.password_matches(user(after, "downloader")["password_hash"], SHA256, "app-pw")
    assert user(after, "admin")["password_hash"] == admin_hash
    text = json.dumps(result) + (tmp_path / "defs.json.log").read_text()
    assert "app-pw" not in text and "admin-pw" not in text


def test_stale_permissions_are_cleared_and_tags_kept_as_wanted(tmp_path: Path) -> None:
    defs = exported()
    defs["permissions"].append(
        {"user": "downloader", "vhost": "/", "configure": "", "write": "", "read": ".*"}
    )
    defs["topic_permissions"].append(
        {"user": "admin", "vhost": "downloader", "exchange": "amq.topic", "write": ".*", "read": ".*"}
    )
    user(defs, "admin")["tags"] = ["management"]
    result = run(tmp_path, defs)
    assert result["diff"]["before"] == "user:downloader: permissions\nuser:admin: tags, topic permissions\n"
    assert "clear_permissions -p / downloader" in calls(tmp_path)
    assert "clear_topic_permissions -p downloader admin" in calls(tmp_path)
    assert drift(json.loads((tmp_path / "defs.json").read_text())) == []


def test_check_mode_reports_and_changes_nothing(tmp_path: Path) -> None:
    defs = exported()
    defs["policies"] = []
    result = run(tmp_path, defs, check=True)
    assert result["changed"] is True and result["differed"] == ["policy:downloader/downloader-delivery-limit"]
    assert calls(tmp_path) == ["export_definitions -"]
    assert json.loads((tmp_path / "defs.json").read_text()) == defs


def test_a_broker_that_does_not_answer_fails_the_task_with_its_words(tmp_path: Path) -> None:
    result = run(tmp_path, None)
    assert result.get("failed") is True
    assert "unable to perform an operation on node" in result["msg"]
