"""requirements.yml and requirements-controller.txt list what the plays use: a controller with
ansible-core and those two files alone runs site.yml and the operation playbooks."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
# What a controller runs: the roles and the playbooks; the molecule scenarios and the benchmark
# are tests, whose collections requirements.yml lists under comments of their own.
PLAYS = [ROOT / "site.yml", *(ROOT / "roles").rglob("*"), *(ROOT / "playbooks").rglob("*")]
TESTS = [*(ROOT / "molecule").rglob("*.yml"), ROOT / ".config/molecule/config.yml", ROOT / "bench/bench.py"]
# A fully qualified name: namespace.collection.plugin, e.g. ansible.posix.firewalld.
FQCN = re.compile(r"(?<![\w./@-])([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")
# Python libraries that plugins of a collection need on the controller.
NEEDS = {"ansible.utils": "netaddr", "community.crypto": "cryptography"}


def installed_collections() -> set[str]:
    spec = importlib.util.find_spec("ansible_collections")
    assert spec and spec.submodule_search_locations, "the ansible package's collections are not installed"
    found = set()
    for location in spec.submodule_search_locations:
        for galaxy in Path(location).glob("*/*/MANIFEST.json"):
            found.add(f"{galaxy.parent.parent.name}.{galaxy.parent.name}")
    return found


def used(files: list[Path], known: set[str]) -> set[str]:
    names = set()
    for path in files:
        if path.is_file() and path.suffix in {".yml", ".yaml", ".j2", ".py"}:
            for ns, coll in FQCN.findall(path.read_text(encoding="utf-8")):
                if f"{ns}.{coll}" in known:
                    names.add(f"{ns}.{coll}")
    return names - {"ansible.builtin"}


def required() -> set[str]:
    data = yaml.safe_load((ROOT / "requirements.yml").read_text(encoding="utf-8"))
    return {c["name"] for c in data["collections"]}


def test_requirements_yml_lists_every_collection_the_plays_and_tests_use() -> None:
    known = installed_collections()
    plays = used(PLAYS, known)
    assert {"ansible.utils", "community.crypto"} <= plays, plays  # the scan finds what is there
    missing = (plays | used(TESTS, known)) - required()
    assert not missing, f"used but not in requirements.yml: {sorted(missing)}"


def test_requirements_yml_lists_no_collection_that_nothing_uses() -> None:
    unused = required() - used(PLAYS + TESTS, installed_collections())
    assert not unused, f"in requirements.yml but used nowhere: {sorted(unused)}"


def test_controller_python_requirements_cover_the_collections_libraries() -> None:
    text = (ROOT / "requirements-controller.txt").read_text(encoding="utf-8")
    packages = {
        re.split(r"[<>=!~ ;\[]", line.strip(), maxsplit=1)[0].lower()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert "ansible-core" in packages, packages
    for collection in used(PLAYS, installed_collections()):
        if collection in NEEDS:
            assert NEEDS[collection] in packages, f"{collection} needs {NEEDS[collection]} on the controller"
