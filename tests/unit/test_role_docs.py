"""Each role's README documents its variables: every variable of defaults/main.yml is in a row
of the README's variable table, and every variable a row names is one of the role's."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).parents[2] / "roles"
ROLES = sorted(p for p in ROLES_DIR.iterdir() if (p / "defaults/main.yml").exists())
ROW = re.compile(r"^\| *(`[^|]*`) *\|")


def variable_rows(readme: str) -> list[str]:
    """The first cells of the rows of the tables headed `| Variable |` (not those of alerts...)."""
    cells, in_table = [], False
    for line in readme.splitlines():
        if re.match(r"^\| *Variable *\|", line):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (row := ROW.match(line)):
            cells.append(row.group(1))
    return cells


def documented(readme: str, defaults: set[str]) -> tuple[set[str], set[str]]:
    """The defaults that the table's rows name, and the names in rows that are no default. A row
    may name several: `a_b_c` / `_d` (a_b_d, or a_d: a suffix replaces the end of the first
    name) and `a_el_*` (a pattern)."""
    found, unknown = set(), set()
    for cell in variable_rows(readme):
        names = re.findall(r"`([^`]+)`", cell)
        first = names[0]
        for name in names:
            if "*" in name:
                matched = set(fnmatch.filter(defaults, name))
            elif name.startswith("_"):
                parts = first.split("_")
                candidates = {"_".join(parts[:k]) + name for k in range(1, len(parts))}
                matched = candidates & defaults
            else:
                matched = {name} & defaults
            if not matched:
                unknown.add(name)
            found |= matched
    return found, unknown


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_the_readme_table_lists_exactly_the_roles_variables(role: Path) -> None:
    defaults = set(yaml.safe_load((role / "defaults/main.yml").read_text()) or {})
    found, unknown = documented((role / "README.md").read_text(), defaults)
    assert not defaults - found, f"{role.name}/README.md lacks a row for {sorted(defaults - found)}"
    assert not unknown, f"{role.name}/README.md has rows for no variable of the role: {sorted(unknown)}"
