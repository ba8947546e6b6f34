"""The first plays of site.yml (facts, pki, validate) accept an inventory that sets only the
three groups and each host's address: every optional variable (celery_client_sources, the
TLS files, the passwords) left to its default. All on this controller: every host is reached
with the local connection, so no address is ever sent anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
# Documentation addresses (RFC 5737), written into allow-lists and certificates only.
HOSTS = {
    "brokers": ("b1.example.test", "192.0.2.1"),
    "workers": ("w1.example.test", "192.0.2.2"),
    "flower": ("f1.example.test", "192.0.2.3"),
}


def test_a_minimal_inventory_passes_the_checks_before_any_change(tmp_path: Path) -> None:
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                # Nothing here needs root: the test runs on controllers without sudo too.
                "ansible_become": False,
            },
            "children": {
                group: {"hosts": {name: {"cluster_address": address}}}
                for group, (name, address) in HOSTS.items()
            },
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    plays = [str(ROOT / "playbooks" / p) for p in ("facts.yml", "pki.yml", "validate.yml")]
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), *plays],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    recap = [line for line in out.splitlines() if " : ok=" in line]
    assert len(recap) == 3 * len(plays) and all("failed=0" in line for line in recap), recap
    # What the run made is the controller's, beside the inventory: the CA and each host's files.
    assert sorted(p.name for p in (tmp_path / ".secrets/pki").glob("*.crt")) == sorted(
        ["ca.crt"] + [f"{name}.crt" for name, _ in HOSTS.values()]
    )
    # The same inventory with a version that YAML read as a number (3.10 unquoted is 3.1): the
    # validation play stops the run, saying what to write.
    version = ["-e", '{"rabbitmq_version": 3.10}']
    bad = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), plays[0], plays[2], *version],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    said = " ".join((bad.stdout + bad.stderr).split())
    assert (
        bad.returncode != 0 and 'rabbitmq_version must be a whole upstream version such as "3.10.8"' in said
    ), said[-3000:]
