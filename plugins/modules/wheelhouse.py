#!/usr/bin/python
"""Build an app's wheelhouse on the controller: its pinned dependencies for each (Python, CPU)
of the hosts, packed into one archive each, and the app's own wheel, each only when missing."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: wheelhouse
short_description: Build an app's wheelhouse on the controller, only what is missing
description:
  - >-
    For each target (a Python version and a CPU of the hosts), C(pip download) (binary only, no
    dependencies) of every pin of the lock file into I(dir)/cpXY-ARCH/, once per lock file (a marker
    C(.complete-LOCKHASH) says the download finished), then one archive
    I(dir)/cpXY-ARCH-LOCKHASH16.tar of it with a fixed order, owner and time, so the same wheels
    give the same bytes. Written under a temporary name first, so that an interrupted run leaves
    no partial archive or marker behind.
  - >-
    The app's wheel, with C(pip wheel --no-deps) and a fixed C(SOURCE_DATE_EPOCH) (the same source
    gives the same bytes), into I(dir)/app/. The checksums of the source's files (without build
    output and caches) name a note I(dir)/app/source-FINGERPRINT.json of the wheel they built; a
    run that finds the note and that wheel builds nothing.
  - >-
    Runs on one controller wait for each other (a lock on I(dir)/.lock): two runs of one wheelhouse
    at once, such as two scenarios tested side by side, neither download into the same directory
    nor write the same temporary file at the same time.
  - Check mode reports what would be built and builds nothing.
options:
  dir:
    description: The controller's wheelhouse directory.
    type: path
    required: true
  source:
    description: The app's source tree (with pyproject.toml).
    type: path
    required: true
  lock:
    description: Lock file of the app's pinned runtime dependencies.
    type: path
    required: true
  targets:
    description:
      - The hosts' Python versions and CPUs, each a pair such as C([3.11, x86_64]) (the CPU as
        Ansible's facts name it); a pair listed twice is built once.
    type: list
    elements: list
    required: true
  python:
    description: Interpreter on the controller whose pip downloads and builds.
    type: path
    required: true
  source_date_epoch:
    description: Time stamp of the files in the app's wheel and in the archives.
    type: int
    default: 315532800
"""

RETURN = r"""
lock_hash:
  description: SHA-256 of the lock file (without trailing whitespace).
  type: str
archives:
  description: File name of the archive of each target, by target name (cpXY-ARCH).
  type: dict
wheel:
  description: File name of the app's wheel in I(dir)/app (empty in check mode before a first build).
  type: str
checksum:
  description: SHA-1 of the app's wheel.
  type: str
built:
  description: What this run downloaded, packed or built.
  type: list
"""

# Build output, caches and hidden files (tools' caches such as .mypy_cache) in the source tree:
# not part of the source's fingerprint.
SKIPPED = re.compile(r"/(build|dist|__pycache__)/|[.]egg-info/|[.]pyc$|/[.]")


def target_name(python: str, arch: str) -> str:
    return f"cp{python.replace('.', '')}-{arch}"


def lock_hash(lock: Path) -> str:
    # Trailing whitespace is left out, as Ansible's file lookup did when these names were first
    # made: an existing wheelhouse and the hosts' venv stamps keep their names.
    return hashlib.sha256(lock.read_text().rstrip().encode()).hexdigest()


def sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(source: Path) -> str:
    kept = sorted(
        p for p in source.rglob("*") if p.is_file() and not SKIPPED.search("/" + str(p.relative_to(source)))
    )
    paths = json.dumps([str(p) for p in kept])
    sums = json.dumps([sha1(p) for p in kept])
    return hashlib.sha256((paths + sums).encode()).hexdigest()


def pack(directory: Path, archive: Path, mtime: int) -> None:
    """Every file of the directory but the markers, in name order, owned by root, at one time."""
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".complete-") or not path.is_file():
                continue
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            info.mode = 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    os.replace(partial, archive)


def download_argv(python: str, pin_python: str, arch: str, dest: Path, lock: Path) -> list[str]:
    return [
        python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--only-binary=:all:", "--dest", str(dest),
        "--python-version", pin_python, "--implementation", "cp",
        "--abi", "cp" + pin_python.replace(".", ""), "--abi", "abi3", "--abi", "none",
        "--platform", f"manylinux2014_{arch}", "--platform", f"manylinux_2_17_{arch}",
        "--platform", f"manylinux_2_28_{arch}", "--platform", "any",
        "--requirement", str(lock),
    ]  # fmt: skip


def run(module: AnsibleModule, argv: list[str], env: dict[str, str] | None = None) -> None:
    rc, out, err = module.run_command(argv, environ_update=env or {})
    if rc != 0:
        module.fail_json(msg=f"{' '.join(argv[:4])} failed (rc {rc}): {(err or out).strip()}", rc=rc)


def app_wheel(module: AnsibleModule, source: Path, apps: Path, epoch: int) -> tuple[str, str, bool]:
    """(wheel, checksum, built) for the source as it is now."""
    note = apps / f"source-{fingerprint(source)[:32]}.json"
    try:
        known = json.loads(note.read_text()) if note.is_file() else {}
    except ValueError:
        known = {}  # a damaged note: built again, and written anew
    if isinstance(known, dict) and known.get("wheel"):
        wheel = apps / str(known["wheel"])
        if wheel.is_file() and sha1(wheel) == known.get("checksum"):
            return known["wheel"], known["checksum"], False
    if module.check_mode:
        return "", "", True
    apps.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(suffix=".wheel") as scratch:
        run(
            module,
            [module.params["python"], "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--wheel-dir", scratch, str(source)],
            {"SOURCE_DATE_EPOCH": str(epoch)},
        )  # fmt: skip
        wheels = sorted(Path(scratch).glob("*.whl"))
        if len(wheels) != 1:
            module.fail_json(msg=f"pip wheel of {source} made {len(wheels)} wheels, not one: {wheels}")
        built = wheels[0]
        checksum = sha1(built)
        dest = apps / built.name
        if not dest.is_file() or sha1(dest) != checksum:
            partial = dest.with_name(dest.name + ".partial")
            shutil.copyfile(built, partial)
            partial.chmod(0o644)
            os.replace(partial, dest)
    partial = note.with_name(note.name + ".partial")
    partial.write_text(json.dumps({"wheel": built.name, "checksum": checksum}, indent=4) + "\n")
    os.replace(partial, note)
    return built.name, checksum, True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "source": {"type": "path", "required": True},
            "lock": {"type": "path", "required": True},
            "targets": {"type": "list", "elements": "list", "required": True},
            "python": {"type": "path", "required": True},
            "source_date_epoch": {"type": "int", "default": 315532800},
        },
        supports_check_mode=True,
    )
    p = module.params
    home, source, lock = Path(p["dir"]), Path(p["source"]), Path(p["lock"])
    needed = ((source / "pyproject.toml", "the app's source (pyproject.toml)"), (lock, "the lock file"))
    for path, what in needed:
        if not path.is_file():
            module.fail_json(msg=f"{what} is not on the controller: {path} not found")
    digest = lock_hash(lock)
    built: list[str] = []
    archives: dict[str, str] = {}
    if any(len(pair) != 2 for pair in p["targets"]):
        module.fail_json(msg=f"targets: each must be a pair [python version, CPU], got {p['targets']}")
    if not module.check_mode:
        home.mkdir(parents=True, exist_ok=True)
        # Held until the module exits; what another run finished meanwhile is found below.
        lock_handle = (home / ".lock").open("a")
        fcntl.flock(lock_handle, fcntl.LOCK_EX)
    for python, arch in sorted({(str(pair[0]), str(pair[1])) for pair in p["targets"]}):
        name = target_name(python, arch)
        tdir = home / name
        marker = tdir / f".complete-{digest}"
        archive = home / f"{name}-{digest[:16]}.tar"
        archives[name] = archive.name
        if not marker.is_file():
            built.append(f"downloaded {name}")
            if not module.check_mode:
                tdir.mkdir(parents=True, exist_ok=True)
                run(module, download_argv(p["python"], python, arch, tdir, lock))
                marker.write_text(f"{lock}\n")
        if not archive.is_file():
            built.append(f"packed {archive.name}")
            if not module.check_mode:
                pack(tdir, archive, p["source_date_epoch"])
    wheel, checksum, rebuilt = app_wheel(module, source, home / "app", p["source_date_epoch"])
    if rebuilt:
        built.append(f"built {wheel or 'the app wheel'}")
    result: dict[str, Any] = {
        "changed": bool(built),
        "lock_hash": digest,
        "archives": archives,
        "wheel": wheel,
        "checksum": checksum,
        "built": built,
    }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
