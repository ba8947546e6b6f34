"""Filters of the rabbitmq role: which of the wanted vhost, users and policies a broker lacks.

Every community.rabbitmq module runs several `rabbitmqctl` commands (each starts an Erlang VM),
also when nothing is to change. One `rabbitmqctl export_definitions -` gives the
whole state at once; `rabbitmq_definitions_drift` compares it with what the role wants and names
the objects that differ, so that only their modules run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

# RabbitMQ's password hashing: base64(salt + H(salt + UTF-8 password)), with a 4-byte salt.
HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
SALT_BYTES = 4


def rabbitmq_password_matches(password_hash: str, algorithm: str, password: str) -> bool:
    """Whether PASSWORD_HASH (as in exported definitions) is the hash of PASSWORD. Unknown
    algorithms and malformed hashes do not match."""
    digest = HASHES.get(algorithm)
    if digest is None or not password_hash:
        return False
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except ValueError:
        return False
    salt, wanted = raw[:SALT_BYTES], raw[SALT_BYTES:]
    if len(salt) != SALT_BYTES:
        return False
    return hmac.compare_digest(digest(salt + password.encode()).digest(), wanted)


def _keys(wanted: dict[str, Any]) -> list[str]:
    keys = [f"vhost:{v}" for v in wanted.get("vhosts", [])]
    keys += [f"user:{u['name']}" for u in wanted.get("users", [])]
    keys += [f"user:{name}" for name in wanted.get("absent_users", [])]
    keys += [f"policy:{p['vhost']}/{p['name']}" for p in wanted.get("policies", [])]
    return keys


def _user_differs(user: dict[str, Any], have: dict[str, Any], definitions: dict[str, Any]) -> bool:
    tags = have.get("tags", [])
    if isinstance(tags, str):  # RabbitMQ before 3.9 exports tags as one comma-separated string
        tags = [t for t in tags.split(",") if t]
    if sorted(tags) != sorted(user.get("tags", [])):
        return True
    if not rabbitmq_password_matches(
        have.get("password_hash", ""), have.get("hashing_algorithm", ""), str(user["password"])
    ):
        return True
    have_perms = {
        p["vhost"]: (p["configure"], p["write"], p["read"])
        for p in definitions.get("permissions", [])
        if p.get("user") == user["name"]
    }
    want_perms = {p["vhost"]: (p["configure"], p["write"], p["read"]) for p in user.get("permissions", [])}
    topic = [p for p in definitions.get("topic_permissions", []) if p.get("user") == user["name"]]
    return have_perms != want_perms or bool(topic)


def _policy_differs(policy: dict[str, Any], have: dict[str, Any]) -> bool:
    return (
        have.get("pattern") != policy["pattern"]
        or have.get("apply-to", "all") != policy.get("apply-to", "all")
        or int(have.get("priority", 0)) != int(policy.get("priority", 0))
        or have.get("definition") != policy["definition"]
    )


def rabbitmq_definitions_drift(exported: Any, wanted: dict[str, Any]) -> list[str]:
    """The keys ("vhost:NAME", "user:NAME", "policy:VHOST/NAME") of the wanted objects that
    EXPORTED (the JSON text or the parsed output of `rabbitmqctl export_definitions -`) does not
    hold as WANTED says; every key when EXPORTED cannot be read.

    WANTED: {"vhosts": [NAME], "users": [{"name", "password", "tags": [TAG], "permissions":
    [{"vhost", "configure", "write", "read"}]}], "absent_users": [NAME], "policies": [{"vhost",
    "name", "pattern", "apply-to", "priority", "definition"}]}. A user's permissions are the
    whole set: permissions on other vhosts, or any topic permission, are a difference (the
    rabbitmq_user module removes them)."""
    try:
        definitions = json.loads(exported) if isinstance(exported, str) else exported
    except ValueError:
        definitions = None
    if not isinstance(definitions, dict) or not isinstance(definitions.get("users"), list):
        return _keys(wanted)
    vhosts = {v.get("name") for v in definitions.get("vhosts", [])}
    users = {u.get("name"): u for u in definitions.get("users", [])}
    policies = {(p.get("vhost"), p.get("name")): p for p in definitions.get("policies", [])}
    drift = [f"vhost:{v}" for v in wanted.get("vhosts", []) if v not in vhosts]
    for user in wanted.get("users", []):
        have = users.get(user["name"])
        if have is None or _user_differs(user, have, definitions):
            drift.append(f"user:{user['name']}")
    drift += [f"user:{name}" for name in wanted.get("absent_users", []) if name in users]
    for policy in wanted.get("policies", []):
        have = policies.get((policy["vhost"], policy["name"]))
        if have is None or _policy_differs(policy, have):
            drift.append(f"policy:{policy['vhost']}/{policy['name']}")
    return drift


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "rabbitmq_definitions_drift": rabbitmq_definitions_drift,
            "rabbitmq_password_matches": rabbitmq_password_matches,
        }
