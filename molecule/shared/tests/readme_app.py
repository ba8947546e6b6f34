"""The app of the README's section "An app of your own in a few lines", made as an operator
following that section makes it: the files its code blocks name on their first line
(`# greeter-app/FILE`), and the lock file it says to copy. The default scenario's prepare step
writes the app outside the repository (its ephemeral directory), so the converge deploys an app
that is not in the repository, from the README alone; the unit tests hold the scenario's
inventory to the section's inventory blocks, and the scenario's test runs its command.

    python3 molecule/shared/tests/readme_app.py DEST    writes DEST/greeter-app (DEST absolute),
                                                        prints whether it wrote a file, and its path
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[3]
README = PROJECT / "README.md"
SECTION = "### An app of your own in a few lines"
APP = "greeter-app"
# The section's step 1: "copy this project's examples/reports-app/requirements.lock".
LOCK = PROJECT / "examples/reports-app/requirements.lock"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


def section(readme: str) -> str:
    """The section's text, up to the next heading of its level or above."""
    lines = readme[readme.index(SECTION + "\n") :].splitlines(keepends=True)
    fenced = False
    for number, line in enumerate(lines[1:], 1):
        fenced ^= line.startswith("```")
        # A heading; a "# ..." line in a code block is a comment.
        if not fenced and re.match(r"#{1,3} ", line):
            return "".join(lines[:number])
    return "".join(lines)


def blocks(readme: str) -> list[tuple[str, str, str]]:
    """The section's code blocks: (language, first line, the lines after it)."""
    found = []
    for match in FENCE.finditer(section(readme)):
        first, _, rest = match.group(2).partition("\n")
        found.append((match.group(1), first, rest))
    return found


def app_files(readme: str) -> dict[str, str]:
    """The app's files by their path under greeter-app/."""
    prefix = f"# {APP}/"
    return {first[len(prefix) :]: rest for _, first, rest in blocks(readme) if first.startswith(prefix)}


def inventory(readme: str) -> dict[str, dict[str, Any]]:
    """The inventory's files (group_vars/NAME.yml) by name, parsed."""
    found = {}
    for language, first, rest in blocks(readme):
        if language == "yaml" and first.startswith("# group_vars/"):
            found[first[2:].split()[0]] = yaml.safe_load(rest)
    return found


def command(readme: str) -> str:
    """The shell command the section runs on a host of the app, continuation lines joined."""
    (body,) = [rest for language, _, rest in blocks(readme) if language == "sh"]
    return body.replace("\\\n", " ")


def write_app(dest: Path, readme: str) -> tuple[Path, bool]:
    """DEST/greeter-app with the section's files and the lock file it copies; whether a file
    was written (files already as the README has them are left alone)."""
    root = dest / APP
    changed = False
    files = app_files(readme)
    if not files:
        raise SystemExit(f"{README}: no `# {APP}/FILE` block under {SECTION!r}")
    files["requirements.lock"] = LOCK.read_text()
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed = True
    return root, changed


if __name__ == "__main__":
    # An empty DEST (an unset variable) would write the app into the current directory.
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_absolute():
        raise SystemExit(__doc__)
    root, changed = write_app(Path(sys.argv[1]), README.read_text())
    print(f"{'written' if changed else 'unchanged'}: {root}")
