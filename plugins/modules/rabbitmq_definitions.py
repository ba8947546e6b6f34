#!/usr/bin/python
"""Make a RabbitMQ cluster hold the wanted vhosts, users (password, tags, the whole set of their
permissions) and policies: one `rabbitmqctl export_definitions` reads them all, and only what
differs is changed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import tempfile
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: rabbitmq_definitions
short_description: Make a RabbitMQ cluster hold the wanted vhosts, users and policies
description:
  - Every C(rabbitmqctl) command starts an Erlang VM, and the community.rabbitmq modules run
    several for each object, also when nothing is to change. This module reads the cluster's
    definitions with one C(rabbitmqctl export_definitions -), compares them with what it is
    given, and changes only the objects that differ.
  - A user differs when it is missing, its password does not match its stored hash (checked
    with RabbitMQ's salted hashing, SHA-256, SHA-512 or MD5), its tags differ, or its
    permissions are not exactly the ones given (permissions on another vhost, and any topic
    permission, are removed).
  - Changes go in through one C(rabbitmqctl import_definitions) of a file that only the broker's
    user can read, removed after (a password only as a new salted SHA-256 hash, never on a
    command line), then
    C(clear_permissions), C(clear_topic_permissions) and C(delete_user) where needed. The import
    is asynchronous, so the module reads the definitions again until they hold what it wanted,
    for at most I(wait) seconds.
  - Check mode and diff are supported. The diff names the objects and what differs about them,
    never a password or a hash.
options:
  vhosts:
    description: Vhosts that must exist.
    type: list
    elements: str
    default: []
  users:
    description: Users that must exist as given.
    type: list
    elements: dict
    default: []
    suboptions:
      name: {description: The user's name., type: str, required: true}
      password: {description: The user's password., type: str, required: true, no_log: true}
      tags: {description: The user's tags, the whole set., type: list, elements: str, default: []}
      permissions:
        description: The user's permissions, the whole set, one per vhost.
        type: list
        elements: dict
        default: []
        suboptions:
          vhost: {description: The vhost., type: str, required: true}
          configure: {description: Regular expression of the configure right., type: str, required: true}
          write: {description: Regular expression of the write right., type: str, required: true}
          read: {description: Regular expression of the read right., type: str, required: true}
  absent_users:
    description: Users that must not exist.
    type: list
    elements: str
    default: []
  policies:
    description: Policies that must exist as given (keys as in exported definitions).
    type: list
    elements: dict
    default: []
  wait:
    description: Seconds to wait for an import to show in the definitions.
    type: int
    default: 30
  import_dir:
    description:
      - Directory of the file that the import reads, removed after (mode 0600, owned by
        I(import_owner), as it holds password hashes).
    type: path
    default: /var/lib/rabbitmq
  import_owner:
    description: The user that runs the broker and reads the import's file.
    type: str
    default: rabbitmq
"""

RETURN = r"""
differed:
  description: The objects that differed before the run (C(vhost:NAME), C(user:NAME), C(policy:VHOST/NAME)).
  type: list
  elements: str
"""

# RabbitMQ's password hashing: base64(salt + H(salt + UTF-8 password)), with a 4-byte salt.
HASHES = {
    "rabbit_password_hashing_sha256": hashlib.sha256,
    "rabbit_password_hashing_sha512": hashlib.sha512,
    "rabbit_password_hashing_md5": hashlib.md5,
}
SALT_BYTES = 4
NEW_HASH = "rabbit_password_hashing_sha256"


def password_matches(password_hash: str, algorithm: str, password: str) -> bool:
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


def password_hash(password: str) -> str:
    salt = os.urandom(SALT_BYTES)
    return base64.b64encode(salt + HASHES[NEW_HASH](salt + password.encode()).digest()).decode()


def _tags(have: dict[str, Any]) -> list[str]:
    tags = have.get("tags", [])
    if isinstance(tags, str):  # RabbitMQ before 3.9 exports tags as one comma-separated string
        tags = [t for t in tags.split(",") if t]
    return sorted(tags)


def _perms(entries: list[dict[str, Any]]) -> dict[str, tuple[str, str, str]]:
    return {p["vhost"]: (p["configure"], p["write"], p["read"]) for p in entries}


def _of_user(definitions: dict[str, Any], kind: str, name: str) -> list[dict[str, Any]]:
    """The entries of DEFINITIONS[KIND] (permissions, topic_permissions) that belong to user NAME."""
    return [p for p in definitions.get(kind, []) if p.get("user") == name]


def user_differences(
    user: dict[str, Any], have: dict[str, Any] | None, definitions: dict[str, Any]
) -> list[str]:
    """What about USER the exported DEFINITIONS (HAVE: its entry there) do not hold as wanted."""
    if have is None:
        return ["missing"]
    found = []
    if not password_matches(
        have.get("password_hash", ""), have.get("hashing_algorithm", ""), user["password"]
    ):
        found.append("password")
    if _tags(have) != sorted(user["tags"]):
        found.append("tags")
    if _perms(_of_user(definitions, "permissions", user["name"])) != _perms(user["permissions"]):
        found.append("permissions")
    if _of_user(definitions, "topic_permissions", user["name"]):
        found.append("topic permissions")
    return found


def _policy_differs(policy: dict[str, Any], have: dict[str, Any]) -> bool:
    return (
        have.get("pattern") != policy["pattern"]
        or have.get("apply-to", "all") != policy.get("apply-to", "all")
        or int(have.get("priority", 0)) != int(policy.get("priority", 0))
        or have.get("definition") != policy["definition"]
    )


def differences(definitions: dict[str, Any], wanted: dict[str, Any]) -> dict[str, list[str]]:
    """The wanted objects that DEFINITIONS (parsed `export_definitions` output) do not hold as
    WANTED (the module's parameters) says, by key ("vhost:NAME", "user:NAME",
    "policy:VHOST/NAME"), each with what differs."""
    vhosts = {v.get("name") for v in definitions.get("vhosts", [])}
    users = {u.get("name"): u for u in definitions.get("users", [])}
    policies = {(p.get("vhost"), p.get("name")): p for p in definitions.get("policies", [])}
    found = {f"vhost:{v}": ["missing"] for v in wanted["vhosts"] if v not in vhosts}
    for user in wanted["users"]:
        if differ := user_differences(user, users.get(user["name"]), definitions):
            found[f"user:{user['name']}"] = differ
    found.update({f"user:{name}": ["present"] for name in wanted["absent_users"] if name in users})
    for policy in wanted["policies"]:
        have = policies.get((policy["vhost"], policy["name"]))
        if have is None or _policy_differs(policy, have):
            found[f"policy:{policy['vhost']}/{policy['name']}"] = [
                "missing" if have is None else "definition"
            ]
    return found


def plan(
    definitions: dict[str, Any], wanted: dict[str, Any], found: dict[str, list[str]]
) -> tuple[dict[str, Any], list[list[str]]]:
    """What puts FOUND right: the definitions to import, and the rabbitmqctl commands (their
    arguments) to run after it."""
    users = {u.get("name"): u for u in definitions.get("users", [])}
    imported: dict[str, Any] = {
        "vhosts": [{"name": v} for v in wanted["vhosts"] if f"vhost:{v}" in found],
        "users": [],
        "permissions": [],
        "policies": [p for p in wanted["policies"] if f"policy:{p['vhost']}/{p['name']}" in found],
    }
    commands: list[list[str]] = []
    for user in wanted["users"]:
        name = user["name"]
        differ = found.get(f"user:{name}")
        if not differ:
            continue
        have = users.get(name) or {}
        keep = "missing" not in differ and "password" not in differ
        imported["users"].append(
            {
                "name": name,
                "password_hash": have["password_hash"] if keep else password_hash(user["password"]),
                "hashing_algorithm": have["hashing_algorithm"] if keep else NEW_HASH,
                "tags": sorted(user["tags"]),
                "limits": have.get("limits") or {},
            }
        )
        imported["permissions"] += [{"user": name, **p} for p in user["permissions"]]
        wanted_vhosts = {p["vhost"] for p in user["permissions"]}
        commands += [
            ["clear_permissions", "-p", p["vhost"], name]
            for p in _of_user(definitions, "permissions", name)
            if p["vhost"] not in wanted_vhosts
        ]
        commands += [
            ["clear_topic_permissions", "-p", vhost, name]
            for vhost in sorted({p["vhost"] for p in _of_user(definitions, "topic_permissions", name)})
        ]
    commands += [["delete_user", n] for n in wanted["absent_users"] if f"user:{n}" in found]
    return {k: v for k, v in imported.items() if v}, commands


def describe(found: dict[str, list[str]]) -> str:
    return "".join(f"{key}: {', '.join(what)}\n" for key, what in found.items())


def rabbitmqctl(module: AnsibleModule, *args: str) -> str:
    """`rabbitmqctl --quiet ARGS`: its output. The module fails, naming the command, when
    rabbitmqctl does."""
    argv = ["rabbitmqctl", "--quiet", *args]
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg=f"`{' '.join(argv)}` failed (rc {rc}): {err.strip() or out.strip()[:500]}")
    return str(out)


def export(module: AnsibleModule) -> dict[str, Any]:
    out = rabbitmqctl(module, "export_definitions", "-")
    try:
        definitions = json.loads(out)
    except ValueError:
        definitions = None
    if not isinstance(definitions, dict) or not isinstance(definitions.get("users"), list):
        module.fail_json(msg=f"`rabbitmqctl export_definitions -` gave no definitions: {out.strip()[:500]}")
    return definitions


def import_file(module: AnsibleModule, imported: dict[str, Any]) -> None:
    """IMPORTED put in with `rabbitmqctl import_definitions` from a file that only the broker's
    user reads (it holds password hashes), removed after. Read from standard input, the
    import never ends on RabbitMQ 4.0."""
    fd, path = tempfile.mkstemp(prefix=".definitions-", suffix=".json", dir=module.params["import_dir"])
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(imported, handle)
        try:
            owner = pwd.getpwnam(module.params["import_owner"])
        except KeyError:
            owner = None
        if owner is not None and os.geteuid() == 0:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        rabbitmqctl(module, "import_definitions", path)
    finally:
        os.unlink(path)


def main() -> None:
    permission = {
        "vhost": {"type": "str", "required": True},
        "configure": {"type": "str", "required": True},
        "write": {"type": "str", "required": True},
        "read": {"type": "str", "required": True},
    }
    user = {
        "name": {"type": "str", "required": True},
        "password": {"type": "str", "required": True, "no_log": True},
        "tags": {"type": "list", "elements": "str", "default": []},
        "permissions": {"type": "list", "elements": "dict", "default": [], "options": permission},
    }
    module = AnsibleModule(
        argument_spec={
            "vhosts": {"type": "list", "elements": "str", "default": []},
            "users": {"type": "list", "elements": "dict", "default": [], "options": user},
            "absent_users": {"type": "list", "elements": "str", "default": []},
            "policies": {"type": "list", "elements": "dict", "default": []},
            "wait": {"type": "int", "default": 30},
            "import_dir": {"type": "path", "default": "/var/lib/rabbitmq"},
            "import_owner": {"type": "str", "default": "rabbitmq"},
        },
        supports_check_mode=True,
    )
    wanted = module.params
    definitions = export(module)
    found = differences(definitions, wanted)
    result: dict[str, Any] = {
        "changed": bool(found),
        "differed": list(found),
        "diff": {
            "before": describe(found),
            "after": "".join(
                f"{key}: {'absent' if what == ['present'] else 'as wanted'}\n" for key, what in found.items()
            ),
        },
    }
    if not found or module.check_mode:
        module.exit_json(**result)

    imported, commands = plan(definitions, wanted, found)
    if imported:
        import_file(module, imported)
    for command in commands:
        rabbitmqctl(module, *command)
    deadline = time.monotonic() + module.params["wait"]
    while left := differences(export(module), wanted):
        if time.monotonic() >= deadline:
            module.fail_json(
                msg=f"after {module.params['wait']} s the definitions still differ:\n{describe(left)}"
            )
        time.sleep(1)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
