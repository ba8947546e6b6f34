#!/usr/bin/python
"""Read or write the stamp of an app's venv: what its last install put there, so that a re-run
skips the wheelhouse transfer and pip while a venv changed by hand is still noticed."""

from __future__ import annotations

import json
import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: venv_stamp
short_description: Read or write the install stamp of a Python venv
description:
  - The stamp is a JSON file, I(stamp), holding an install id (chosen by the caller, e.g. the
    lock file's hash and the app wheel's checksum) and every distribution installed in the venv
    with its version, as the venv's own Python sees them (C(importlib.metadata)).
  - C(state=check) reads it and compares the recorded distributions with the venv's; it returns
    the recorded id, whether the venv still holds every recorded version (I(intact)), and the
    app wheel's checksum (the id's last C(-) part). It never changes anything.
  - C(state=record) writes the stamp for I(id) and the venv's distributions as they are now
    (after an install), under a temporary name first; changed only when the content differs.
  - Check mode and diff are supported.
options:
  venv:
    description: The venv's directory (its C(bin/python) is asked for the distributions).
    type: path
    required: true
  stamp:
    description: The stamp file.
    type: path
    required: true
  state:
    description: C(check) reads and compares; C(record) writes.
    type: str
    choices: [check, record]
    default: check
  id:
    description: The install id to record (with C(state=record)).
    type: str
"""

RETURN = r"""
id:
  description: The install id recorded in the stamp (empty when there is none or it is unreadable).
  type: str
intact:
  description: Whether every distribution recorded in the stamp is installed at its version.
  type: bool
wheel:
  description:
    - The recorded app wheel's checksum (without a stamp, that of the file .downloader-app-wheel
      of earlier releases).
  type: str
"""

# What the venv's Python reports: its distributions' normalised names and versions.
LIST = (
    "import json; from importlib.metadata import distributions; "
    "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version"
    " for d in distributions() if d.metadata['Name']}))"
)
LEGACY = ".downloader-app-wheel"


def read_stamp(stamp: str) -> tuple[str, dict[str, str]] | None:
    try:
        with open(stamp, encoding="utf-8") as handle:
            recorded = json.load(handle)
        return str(recorded["id"]), dict(recorded["distributions"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def legacy_wheel(stamp: str) -> str:
    try:
        with open(os.path.join(os.path.dirname(stamp), LEGACY), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def installed(module: AnsibleModule, venv: str) -> dict[str, str] | None:
    """The venv's distributions, or None when it has no working Python."""
    python = os.path.join(venv, "bin", "python")
    if not os.access(python, os.X_OK):
        return None
    rc, out, _err = module.run_command([python, "-c", LIST])
    if rc != 0:
        return None
    found: dict[str, str] = json.loads(out)
    return found


def render(install_id: str, distributions: dict[str, str]) -> str:
    return json.dumps({"id": install_id, "distributions": distributions}, indent=1, sort_keys=True) + "\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "venv": {"type": "path", "required": True},
            "stamp": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["check", "record"], "default": "check"},
            "id": {"type": "str"},
        },
        required_if=[("state", "record", ["id"])],
        supports_check_mode=True,
    )
    venv, stamp = module.params["venv"], module.params["stamp"]
    recorded = read_stamp(stamp)
    have = installed(module, venv)

    if module.params["state"] == "check":
        if recorded is None:
            module.exit_json(changed=False, id="", intact=False, wheel=legacy_wheel(stamp))
        install_id, wanted = recorded
        intact = bool(wanted) and have is not None and all(have.get(n) == v for n, v in wanted.items())
        module.exit_json(changed=False, id=install_id, intact=intact, wheel=install_id.rsplit("-", 1)[-1])

    if have is None:
        module.fail_json(msg=f"{venv}/bin/python cannot list the venv's distributions: is {venv} a venv?")
    install_id = module.params["id"]
    after = render(install_id, have)
    try:
        with open(stamp, encoding="utf-8") as handle:
            before = handle.read()
    except OSError:
        before = ""
    changed = before != after
    if changed and not module.check_mode:
        partial = stamp + ".partial"
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write(after)
        os.chmod(partial, 0o644)
        os.replace(partial, stamp)
    module.exit_json(
        changed=changed,
        id=install_id,
        intact=True,
        wheel=install_id.rsplit("-", 1)[-1],
        diff={"before": before, "after": after, "before_header": stamp, "after_header": stamp},
    )


if __name__ == "__main__":
    main()
