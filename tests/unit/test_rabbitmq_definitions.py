"""The rabbitmq role's filters (roles/rabbitmq/filter_plugins/rabbitmq_definitions.py)."""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

PLUGIN = Path(__file__).parents[2] / "roles/rabbitmq/filter_plugins/rabbitmq_definitions.py"
spec = importlib.util.spec_from_file_location("rabbitmq_definitions", PLUGIN)
assert spec and spec.loader
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)

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
    assert plugin.rabbitmq_password_matches(BROKER_HASH, SHA256, "correct horse")
    assert not plugin.rabbitmq_password_matches(BROKER_HASH, SHA256, "correct horse ")
    assert not plugin.rabbitmq_password_matches(BROKER_HASH, SHA256, "")


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [
        ("rabbit_password_hashing_sha512", hashlib.sha512),
        ("rabbit_password_hashing_md5", hashlib.md5),
    ],
)
def test_the_other_hashing_algorithms(algorithm: str, digest: Any) -> None:
    stored = rabbit_hash("pw", digest=digest)
    assert plugin.rabbitmq_password_matches(stored, algorithm, "pw")
    assert not plugin.rabbitmq_password_matches(stored, algorithm, "other")
    assert not plugin.rabbitmq_password_matches(stored, SHA256, "pw")


@pytest.mark.parametrize("stored", ["", "not base64!", "AAE=", rabbit_hash("pw")[:-8]])
def test_unknown_algorithm_or_malformed_hash_never_matches(stored: str) -> None:
    assert not plugin.rabbitmq_password_matches(rabbit_hash("pw"), "some_future_algorithm", "pw")
    assert not plugin.rabbitmq_password_matches(stored, SHA256, "pw")


def test_a_converged_broker_has_no_drift_as_json_text_or_parsed() -> None:
    assert plugin.rabbitmq_definitions_drift(exported(), WANTED) == []
    assert plugin.rabbitmq_definitions_drift(json.dumps(exported()), WANTED) == []


@pytest.mark.parametrize("output", ["", "Error: unable to perform an operation on node", None, "[]", "{}"])
def test_an_export_that_cannot_be_read_runs_every_module(output: Any) -> None:
    assert plugin.rabbitmq_definitions_drift(output, WANTED) == ALL_KEYS


def change(edit: Any) -> list[str]:
    defs = copy.deepcopy(exported())
    edit(defs)
    return plugin.rabbitmq_definitions_drift(defs, WANTED)


def user(defs: dict[str, Any], name: str) -> dict[str, Any]:
    return next(u for u in defs["users"] if u["name"] == name)


def test_each_difference_names_its_object_only() -> None:
    assert change(lambda d: d.update(vhosts=[{"name": "/"}])) == ["vhost:downloader"]
    assert change(lambda d: user(d, "downloader").update(password_hash=rabbit_hash("old"))) == [
        "user:downloader"
    ]
    assert change(lambda d: user(d, "admin").update(tags=["management"])) == ["user:admin"]
    assert change(lambda d: user(d, "admin").update(tags=[])) == ["user:admin"]
    assert change(lambda d: d["users"].remove(user(d, "admin"))) == ["user:admin"]
    guest = {"name": "guest", "hashing_algorithm": SHA256, "password_hash": rabbit_hash("guest"), "tags": []}
    assert change(lambda d: d["users"].append(guest)) == ["user:guest"]
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
    guest = {"name": "guest", "hashing_algorithm": SHA256, "password_hash": rabbit_hash("guest"), "tags": []}
    defs = exported()
    defs["users"].append(guest)
    assert plugin.rabbitmq_definitions_drift(defs, {**WANTED, "absent_users": []}) == []
