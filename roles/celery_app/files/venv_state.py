"""The state of the app's venv, run by the venv's own Python (tasks/install.yml).

    venv_state.py check STAMP        prints {"id": ID, "intact": BOOL, "wheel": CHECKSUM}: the
                                     install id recorded in STAMP ("" when STAMP is missing or
                                     unreadable), whether every distribution recorded there is
                                     installed at its version, and the checksum of the app's
                                     wheel it records (the id's last part; with no STAMP,
                                     the file .downloader-app-wheel of earlier releases)
    venv_state.py record STAMP ID    records ID and the venv's distributions (after an install)

The stamp lets a re-run skip the wheelhouse transfer and pip (which needs a second or more per
host just to say that nothing would change), while a venv changed by hand is still noticed.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import distributions

LEGACY = ".downloader-app-wheel"


def installed() -> dict[str, str]:
    return {d.metadata["Name"].lower().replace("_", "-"): d.version for d in distributions()}


def check(stamp: str) -> dict[str, object]:
    try:
        with open(stamp, encoding="utf-8") as f:
            recorded = json.load(f)
        wanted = dict(recorded["distributions"])
        install_id = str(recorded["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return {"id": "", "intact": False, "wheel": legacy_wheel(stamp)}
    have = installed()
    intact = bool(wanted) and all(have.get(name) == version for name, version in wanted.items())
    return {"id": install_id, "intact": intact, "wheel": install_id.rsplit("-", 1)[-1]}


def legacy_wheel(stamp: str) -> str:
    try:
        with open(os.path.join(os.path.dirname(stamp), LEGACY), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def record(stamp: str, install_id: str) -> None:
    partial = stamp + ".partial"
    with open(partial, "w", encoding="utf-8") as f:
        json.dump({"id": install_id, "distributions": installed()}, f, indent=1, sort_keys=True)
        f.write("\n")
    os.chmod(partial, 0o644)
    os.replace(partial, stamp)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "check":
        print(json.dumps(check(argv[1]), sort_keys=True))
        return 0
    if len(argv) == 3 and argv[0] == "record":
        record(argv[1], argv[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
