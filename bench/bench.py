"""Benchmarks of the project against a local lab of its own (README.md, section Benchmarks).

Started by bench/run, which prepares the controller first. Parts:
  converge    fresh converge of 1 broker + N worker hosts + 1 Flower host, and a re-run (also
              one with Mitogen, the strategy mitogen_linear)
  floor       the same package installs by hand on one fresh host
  throughput  downloads/s (tutorial's worker settings vs the project's defaults) and no-op tasks/s
  report      only rewrite latest.md and latest.png from latest.json

Results are merged into bench/results/latest.json (each part replaces its own entry) when the
run finishes, then latest.md and latest.png are written from it. While it runs, every part
measured is kept in bench/results/in-progress.json: a run that fails leaves latest.* as they
were and its measured parts there. Every container and network created here is
removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
LATEST = RESULTS / "latest.json"
PARTIAL = RESULTS / "in-progress.json"

# The bench's own lab: other names, network and subnet than scripts/lab's defaults and molecule's.
LAB_ENV = {
    "LAB_PREFIX": "bench",
    "LAB_NETWORK": "celery-bench",
    "LAB_SUBNET": "172.30.240.0/24",
    "LAB_DIR": str(BENCH / ".lab"),
}
PREFIX = LAB_ENV["LAB_PREFIX"]
NETWORK = LAB_ENV["LAB_NETWORK"]
INVENTORY = Path(LAB_ENV["LAB_DIR"]) / "inventory" / "hosts.yml"
FLOOR_CONTAINER = f"{PREFIX}-floor"
SLOW_PORT = 8100
SLOW_DELAY = 0.1
REMOTE_DIR = "/usr/local/lib/bench"

# The packages site.yml installs on Debian (roles/*/vars/Debian.yml, roles/firewall/tasks), in
# the same two ways: firewalld without its recommendations, the others with theirs.
FLOOR_PACKAGES_NO_RECOMMENDS = ["firewalld", "netbase"]
FLOOR_PACKAGES = ["rabbitmq-server", "python3", "python3-venv"]


def log(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def sh(
    args: list[str], *, env: dict[str, str] | None = None, check: bool = True, logfile: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command and return its output; with a logfile, stdout and stderr are also written
    there as they come (tail -f it to follow a long run), and stdout returns both."""
    full_env = {**os.environ, **(env or {})}
    if not logfile:
        proc = subprocess.run(args, env=full_env, text=True, capture_output=True, cwd=ROOT)
    else:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        with logfile.open("a") as handle:
            handle.write(f"$ {' '.join(args)}\n")
            with subprocess.Popen(
                args, env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT
            ) as child:
                assert child.stdout is not None
                for line in child.stdout:
                    handle.write(line)
                    handle.flush()
                    lines.append(line)
            handle.write(f"[rc={child.returncode}]\n")
        proc = subprocess.CompletedProcess(args, child.returncode, "".join(lines), "")
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(args)}\n{tail}")
    return proc


def timed(args: list[str], **kw: Any) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = sh(args, **kw)
    return round(time.monotonic() - start, 1), proc


# ---------------------------------------------------------------------------- the lab


def lab(*args: str, logfile: Path | None = None, converge: bool = False) -> None:
    env = {**LAB_ENV, "LAB_CONVERGE": "1" if converge else "0"}
    sh(["scripts/lab", *args], env=env, logfile=logfile)


def lab_down() -> None:
    subprocess.run(["docker", "rm", "-f", FLOOR_CONTAINER], capture_output=True, check=False)
    subprocess.run(["scripts/lab", "down"], env={**os.environ, **LAB_ENV}, cwd=ROOT, capture_output=True)


def ansible_env() -> dict[str, str]:
    # profile_tasks prints the slowest tasks at the end of the log (read into the results);
    # module_runs (bench/callback_plugins) counts each host's task results by action.
    return {
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks,module_runs",
        "ANSIBLE_CALLBACK_PLUGINS": str(ROOT / "bench" / "callback_plugins"),
        "ANSIBLE_FORCE_COLOR": "0",
    }


RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
PROFILE = re.compile(r"^(.+?) -{2,} (\d+\.\d+)s$", re.M)


def site(label: str, extra: list[str] | None = None, mitogen: bool = False) -> dict[str, Any]:
    """Run site.yml against the bench lab; seconds, changed tasks and the slowest tasks. With
    mitogen, through the strategy mitogen_linear (plugins/strategy, ansible.cfg)."""
    logfile = LOGS / f"{label}.log"
    logfile.unlink(missing_ok=True)
    env = ansible_env()
    if mitogen:
        # The lab's hosts are reached over SSH, a connection Mitogen takes over as it is; but
        # Mitogen enforces host keys unless told otherwise, ignoring the lab inventory's
        # StrictHostKeyChecking=no (its containers get new keys each time).
        env["ANSIBLE_STRATEGY"] = "mitogen_linear"
        env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    counts = LOGS / f"{label}.module-runs.json"
    counts.unlink(missing_ok=True)
    env["BENCH_MODULE_RUNS"] = str(counts)
    before = loadavg()
    seconds, proc = timed(
        ["ansible-playbook", "site.yml", "-i", str(INVENTORY), *(extra or [])],
        env=env,
        logfile=logfile,
    )
    if mitogen and "Mitogen cannot be imported" in proc.stdout:
        raise RuntimeError("the Mitogen re-run ran without Mitogen: is it installed in .venv?")
    recap = {m[0]: {"ok": int(m[1]), "changed": int(m[2])} for m in RECAP.findall(proc.stdout)}
    slowest = [(name.strip(), float(sec)) for name, sec in PROFILE.findall(proc.stdout)][:5]
    return {
        "seconds": seconds,
        # Task results that ran (ok, which counts the changed ones too), over every host: what
        # a run pays per task and host; skipped tasks cost the controller only.
        "task_runs": sum(h["ok"] for h in recap.values()),
        # The same per host: a count that does not depend on the machine's speed.
        "task_runs_by_host": {h: v["ok"] for h, v in recap.items() if h != "localhost"},
        # Of those, the ones that ran a module on the host (the rest ran on the controller
        # alone: assert, set_fact, include_vars, argument specs, delegated tasks).
        "module_runs_by_host": {
            h: v["on_host"]
            for h, v in (json.loads(counts.read_text()) if counts.exists() else {}).items()
            if h != "localhost"
        },
        "changed": sum(h["changed"] for h in recap.values()),
        "changed_by_host": {h: v["changed"] for h, v in recap.items() if v["changed"]},
        "slowest_tasks": slowest,
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


NOOP_TASKS = 20


def noop_tasks() -> dict[str, Any]:
    """Ansible's own cost of one module run on this machine: NOOP_TASKS tasks of
    ansible.builtin.ping on every host site.yml touches, through the lab's connection, with the
    project's ansible.cfg (pipelining, forks)."""
    playbook = LOGS / "noop-tasks.yml"
    (LOGS / "noop-tasks.log").unlink(missing_ok=True)
    tasks = "".join(f"    - name: No-op {i}\n      ansible.builtin.ping:\n" for i in range(NOOP_TASKS))
    playbook.write_text(
        f"---\n- name: No-op tasks\n  hosts: brokers:workers:flower\n  gather_facts: false\n  tasks:\n{tasks}"
    )
    seconds, proc = timed(
        ["ansible-playbook", str(playbook), "-i", str(INVENTORY)],
        env=ansible_env(),
        logfile=LOGS / "noop-tasks.log",
    )
    hosts = len(RECAP.findall(proc.stdout))
    return {
        "tasks": NOOP_TASKS,
        "hosts": hosts,
        "seconds": seconds,
        "per_task_all_hosts": round(seconds / NOOP_TASKS, 2),
        "per_task_and_host": round(seconds / (NOOP_TASKS * hosts), 3),
    }


def wheelhouse_warm() -> bool:
    """Whether the controller's wheelhouse already holds the dependencies (site.yml downloads
    them from PyPI on the first run of a checkout, once)."""
    return any((ROOT / ".cache" / "wheelhouse").glob("cp*/.complete-*"))


def lab_up(workers: int) -> float:
    lab_down()
    log(f"creating the bench lab: 1 broker, {workers} worker host(s), 1 Flower host, 1 web host")
    start = time.monotonic()
    lab("up", str(workers), logfile=LOGS / f"lab-up-{workers}.log")
    return round(time.monotonic() - start, 1)


# ---------------------------------------------------------------------------- parts


def part_converge(args: argparse.Namespace, results: dict[str, Any]) -> None:
    runs: list[dict[str, Any]] = []
    results["converge"] = {"measured_at": now(), "runs": runs}
    for workers in args.workers:
        warm = wheelhouse_warm()
        hosts_seconds = lab_up(workers)
        log(f"N={workers}: fresh converge of site.yml")
        fresh = site(f"converge-{workers}-fresh")
        log(f"N={workers}: fresh {fresh['seconds']} s; re-run")
        rerun = site(f"converge-{workers}-rerun")
        log(f"N={workers}: re-run {rerun['seconds']} s, {rerun['changed']} changed; re-run with Mitogen")
        rerun_mitogen = site(f"converge-{workers}-rerun-mitogen", mitogen=True)
        log(
            f"N={workers}: re-run with Mitogen {rerun_mitogen['seconds']} s,"
            f" {rerun_mitogen['changed']} changed; {NOOP_TASKS} no-op tasks"
        )
        noop = noop_tasks()
        log(f"N={workers}: {noop['per_task_all_hosts']} s per no-op task on {noop['hosts']} hosts")
        runs.append(
            {
                "workers": workers,
                "hosts_ready_seconds": hosts_seconds,
                "wheelhouse_warm": warm,
                "fresh": fresh,
                "rerun": rerun,
                "rerun_mitogen": rerun_mitogen,
                "noop_tasks": noop,
            }
        )
        save(results)  # each lab size as soon as it is measured
        if "throughput" in args.parts and workers == args.throughput_workers:
            part_throughput(args, results, lab_ready=True)
        if not (args.keep and workers == args.workers[-1]):
            lab_down()


def part_floor(args: argparse.Namespace, results: dict[str, Any]) -> None:
    wheelhouse = ROOT / ".cache" / "wheelhouse"
    tags = sorted(p.parent for p in wheelhouse.glob("cp311-*/.complete-*"))
    wheels = sorted((wheelhouse / "app").glob("*.whl"))
    if not tags or not wheels:
        raise RuntimeError(
            "the floor needs the controller's wheelhouse (.cache/wheelhouse): run `bench/run converge` first"
        )
    image = f"{os.environ.get('LAB_IMAGE_PREFIX', 'celery-lab/debian')}:bookworm"
    logfile = LOGS / "floor.log"
    logfile.unlink(missing_ok=True)
    subprocess.run(["docker", "rm", "-f", FLOOR_CONTAINER], capture_output=True, check=False)
    log(f"floor: by hand on one fresh {image} container")
    sh(
        [
            "docker",
            "run",
            "-d",
            "--name",
            FLOOR_CONTAINER,
            "--hostname",
            FLOOR_CONTAINER,
            "--label",
            f"celery-lab={NETWORK}",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--cgroupns=host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            image,
            "/lib/systemd/systemd",
        ],
        logfile=logfile,
    )
    sh(["docker", "exec", FLOOR_CONTAINER, "mkdir", "-p", "/opt/downloader/wheelhouse"])
    sh(["docker", "cp", f"{tags[0]}/.", f"{FLOOR_CONTAINER}:/opt/downloader/wheelhouse/"])
    sh(["docker", "cp", str(wheels[-1]), f"{FLOOR_CONTAINER}:/opt/downloader/wheelhouse/"])
    sh(["docker", "cp", str(ROOT / "app" / "requirements.lock"), f"{FLOOR_CONTAINER}:/opt/downloader/"])
    pip = "/opt/downloader/venv/bin/pip install --disable-pip-version-check --no-index"
    pip += " --find-links /opt/downloader/wheelhouse"
    steps = {
        "apt_update": "apt-get update -qq",
        "apt_install": (
            "export DEBIAN_FRONTEND=noninteractive"
            " && apt-get install -y -qq --no-install-recommends "
            + " ".join(FLOOR_PACKAGES_NO_RECOMMENDS)
            + " && apt-get install -y -qq "
            + " ".join(FLOOR_PACKAGES)
        ),
        "venv_pip": (
            "python3 -m venv /opt/downloader/venv"
            f" && {pip} -q -r /opt/downloader/requirements.lock"
            f" && {pip} -q --no-deps /opt/downloader/wheelhouse/{wheels[-1].name}"
        ),
    }
    before = loadavg()
    seconds = {}
    for name, cmd in steps.items():
        seconds[name], _ = timed(["docker", "exec", FLOOR_CONTAINER, "sh", "-ec", cmd], logfile=logfile)
        log(f"floor: {name} {seconds[name]} s")
    subprocess.run(["docker", "rm", "-f", FLOOR_CONTAINER], capture_output=True, check=False)
    results["floor"] = {
        "measured_at": now(),
        "packages_no_recommends": FLOOR_PACKAGES_NO_RECOMMENDS,
        "packages": FLOOR_PACKAGES,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }
    save(results)


def remote_json(host: str, *args: str, timeout: float) -> dict[str, Any]:
    cmd = ["timeout", str(int(timeout) + 60), "/opt/downloader/venv/bin/python", f"{REMOTE_DIR}/load.py"]
    proc = sh(["docker", "exec", host, *cmd, *args], logfile=LOGS / "throughput.log")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def part_throughput(args: argparse.Namespace, results: dict[str, Any], lab_ready: bool = False) -> None:
    workers = args.throughput_workers
    info: dict[str, Any] = {"measured_at": now(), "worker_hosts": workers, "senders": args.senders}
    if not lab_ready:
        info["hosts_ready_seconds"] = lab_up(workers)
        log("throughput: converging site.yml with the project's defaults")
        info["converge"] = site(f"throughput-{workers}-converge")
    web, client = f"{PREFIX}-web1", f"{PREFIX}-flower1"
    (LOGS / "throughput.log").unlink(missing_ok=True)
    # The molecule scenarios' test web server: its /delay/MS/NAME answers 1 KiB after MS ms.
    server, load = ROOT / "molecule/shared/files/slow_http.py", BENCH / "remote/load.py"
    for host, path in ((web, server), (client, load)):
        sh(["docker", "exec", host, "mkdir", "-p", REMOTE_DIR])
        sh(["docker", "cp", str(path), f"{host}:{REMOTE_DIR}/{path.name}"])
    log(f"throughput: HTTP server on {web}:{SLOW_PORT} answering after {SLOW_DELAY * 1000:.0f} ms")
    sh(["docker", "exec", "-d", web, "python3", f"{REMOTE_DIR}/slow_http.py", str(SLOW_PORT)])
    up = f"http://127.0.0.1:{SLOW_PORT}/delay/0/up"
    probe = f"import urllib.request; urllib.request.urlopen('{up}', timeout=2)"
    for _ in range(30):
        if sh(["docker", "exec", web, "python3", "-c", probe], check=False).returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError("the delayed HTTP server did not answer within 15 s")

    url = f"http://{web}:{SLOW_PORT}/delay/{SLOW_DELAY * 1000:.0f}/"
    run_id = f"bench{uuid.uuid4().hex[:8]}"
    cores = os.cpu_count() or 1
    nodes_expected = workers  # one node per worker host (celery_worker_nodes default)
    # JSON, so that the concurrency is an integer (key=value extra vars are strings).
    tutorial = json.dumps({"celery_worker_pool": "prefork", "celery_worker_concurrency": cores})
    settings = [("tutorial", ["-e", tutorial]), ("defaults", [])]
    for name, extra in settings:
        log(f"throughput: site.yml with the {name} worker settings {' '.join(extra)}".rstrip())
        switch = site(f"throughput-{workers}-{name}-switch", extra)
        pools = remote_json(client, "nodes", "--expect", str(nodes_expected), timeout=120)
        count = args.tutorial_downloads if name == "tutorial" else args.downloads
        log(f"throughput: {count} downloads with the {name} settings ({pools['nodes']})")
        run = remote_json(
            client, "download", "--count", str(count), "--url", url, "--prefix", f"{run_id}-{name}",
            "--senders", str(args.senders), "--timeout", str(args.phase_timeout), timeout=args.phase_timeout,
        )  # fmt: skip
        log(
            f"throughput: {name}: {run['per_second']} downloads/s"
            f" ({run['succeeded']}/{count} in {run['seconds']} s)"
        )
        info[name] = {
            "switch_seconds": switch["seconds"],
            "pools": pools,
            "run": run,
            "loadavg_after": loadavg(),
        }
    log(f"throughput: {args.noop} no-op tasks (celery.accumulate) with the defaults")
    noop = remote_json(
        client,
        "noop",
        "--count",
        str(args.noop),
        "--senders",
        str(args.senders),
        "--timeout",
        str(args.phase_timeout),
        timeout=args.phase_timeout,
    )
    log(
        f"throughput: no-op: {noop['per_second']} tasks/s"
        f" ({noop['succeeded']}/{args.noop} in {noop['seconds']} s)"
    )
    info["noop"] = {"run": noop, "loadavg_after": loadavg()}
    info["delay_ms"] = SLOW_DELAY * 1000
    results["throughput"] = info
    args.throughput_done = True
    save(results)
    if not lab_ready and not args.keep:
        lab_down()


# ---------------------------------------------------------------------------- results


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])  # type: ignore[index]
    os_name = "unknown"
    release = Path("/etc/os-release")
    if release.exists():
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', release.read_text(), re.M)
        os_name = m[1] if m else os_name
    docker = subprocess.run(
        ["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_name,
        "docker": docker.stdout.strip(),
        "commit": commit.stdout.strip(),
    }


def save(results: dict[str, Any], final: bool = False) -> None:
    """Each measured part at once to in-progress.json; latest.json only for a finished run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (LATEST if final else PARTIAL).write_text(json.dumps(results, indent=2) + "\n")
    if final:
        PARTIAL.unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "parts", nargs="*", help="converge, floor, throughput, report (default: all but report)"
    )
    parser.add_argument(
        "--workers", default="1,2,4", help="worker hosts of the converge labs (default 1,2,4)"
    )
    parser.add_argument(
        "--throughput-workers", type=int, default=1, help="worker hosts of the throughput lab"
    )
    parser.add_argument("--downloads", type=int, default=2000, help="downloads with the defaults")
    parser.add_argument(
        "--tutorial-downloads", type=int, default=300, help="downloads with the tutorial's settings"
    )
    parser.add_argument("--noop", type=int, default=3000, help="no-op tasks")
    parser.add_argument(
        "--senders", type=int, default=4, help="sender processes of the load client (default 4)"
    )
    parser.add_argument("--phase-timeout", type=float, default=300, help="seconds per load phase at most")
    parser.add_argument("--keep", action="store_true", help="keep the last lab (not after a failure)")
    parser.add_argument("--note", default="", help="a remark printed with the results (e.g. 'under load')")
    args = parser.parse_args()
    args.parts = args.parts or ["converge", "floor", "throughput"]
    unknown = set(args.parts) - {"converge", "floor", "throughput", "report"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    args.throughput_done = False
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if any(w < 1 for w in args.workers) or args.throughput_workers < 1:
        parser.error("worker counts must be positive")
    if not 1 <= args.senders <= min(args.downloads, args.tutorial_downloads, args.noop):
        parser.error("--senders must be at least 1 and at most the smallest task count")

    from report import write_report

    results: dict[str, Any] = json.loads(LATEST.read_text()) if LATEST.exists() else {}
    if args.parts != ["report"]:
        results["machine"] = machine()
        results["started_at"] = now()
        results["loadavg_start"] = loadavg()
        results["note"] = args.note
        LOGS.mkdir(parents=True, exist_ok=True)

        def stop(signum: int, _frame: Any) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGHUP, stop)
        try:
            if "converge" in args.parts:
                part_converge(args, results)
            if "throughput" in args.parts and not args.throughput_done:
                part_throughput(args, results)
            if "floor" in args.parts:
                part_floor(args, results)
        except BaseException:
            log("removing the bench lab")
            lab_down()
            if PARTIAL.exists():
                log(f"not finished: latest.* unchanged; what was measured is in {PARTIAL.relative_to(ROOT)}")
            raise
        if args.keep:
            log(f"the last lab is kept: {' '.join(f'{k}={v}' for k, v in LAB_ENV.items())} scripts/lab down")
        else:
            lab_down()
        results["loadavg_end"] = loadavg()
        results["finished_at"] = now()
        save(results, final=True)
    md, png = write_report(results, RESULTS)
    log(f"wrote {md.relative_to(ROOT)} and {png.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
