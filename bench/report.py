"""latest.md (a Markdown table) and latest.png (a chart) from the results of bench/bench.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _floor_installs(floor: dict) -> str:
    """The floor's apt-get install commands, as site.yml installs the packages."""
    plain = f"`apt-get install {' '.join(floor['packages'])}`"
    bare = floor.get("packages_no_recommends")
    return f"`apt-get install --no-install-recommends {' '.join(bare)}`, {plain}" if bare else plain


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pool_name(implementation: str | None) -> str:
    """'celery.concurrency.prefork:TaskPool' -> 'prefork'."""
    return (implementation or "?").split(":")[0].rsplit(".", 1)[-1]


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "**not met**")


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met?) for each target of the issue."""
    rows: list[tuple[str, str, bool | None]] = []
    tp = results.get("throughput") or {}
    tut = (tp.get("tutorial") or {}).get("run", {}).get("per_second")
    dfl = (tp.get("defaults") or {}).get("run", {}).get("per_second")
    noop = (tp.get("noop") or {}).get("run", {}).get("per_second")
    ratio = dfl / tut if dfl and tut else None
    rows.append(
        ("downloads/s: defaults >= 15x tutorial", f"{_fmt(ratio)}x", None if ratio is None else ratio >= 15)
    )
    share = dfl / noop if dfl and noop else None
    rows.append(
        (
            "downloads/s: defaults >= 80% of the no-op ceiling",
            "n/a" if share is None else f"{share:.0%}",
            None if share is None else share >= 0.8,
        )
    )
    runs = {r["workers"]: r for r in (results.get("converge") or {}).get("runs", [])}
    rerun4 = runs[4]["rerun"]["seconds"] if 4 in runs else None
    rows.append(
        ("re-run, 4 worker hosts, < 30 s", f"{_fmt(rerun4)} s", None if rerun4 is None else rerun4 < 30)
    )
    if rerun4 is not None:
        rows.append(("the same, < 45 s with the default strategy", f"{_fmt(rerun4)} s", rerun4 < 45))
    rerun = runs[4]["rerun"] if 4 in runs else {}
    by_host = rerun.get("task_runs_by_host")
    if by_host:
        most = max(by_host.values())
        rows.append(("task results per host in that re-run <= 25", f"at most {most}", most <= 25))
    modules = rerun.get("module_runs_by_host")
    if modules:
        most = max(modules.values())
        rows.append(("of which module runs on the host <= 25", f"at most {most}", most <= 25))
    mitogen4 = (runs[4].get("rerun_mitogen") or {}).get("seconds") if 4 in runs else None
    if mitogen4 is not None:
        rows.append(("the same, with Mitogen (opt-in)", f"{_fmt(mitogen4)} s", mitogen4 < 30))
    growth = (
        runs[4]["fresh"]["seconds"] / runs[1]["fresh"]["seconds"] - 1 if 1 in runs and 4 in runs else None
    )
    rows.append(
        (
            "fresh converge grows < 50% from N=1 to N=4",
            "n/a" if growth is None else f"{growth:+.0%}",
            None if growth is None else growth < 0.5,
        )
    )
    return rows


def markdown(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    out = ["# Benchmark results", ""]
    out.append(
        f"Measured {results.get('started_at', '?')} to {results.get('finished_at', '?')} at commit "
        f"`{m.get('commit', '?')}` on: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
        f"{m.get('ram_gib', '?')} GiB RAM, {m.get('os', '?')}, kernel {m.get('kernel', '?')}, "
        f"Docker {m.get('docker', '?')}. The lab's hosts are containers on this one machine."
    )
    out.append(
        f"Load average (1, 5, 15 min) at the start: {results.get('loadavg_start')}, "
        f"at the end: {results.get('loadavg_end')}."
    )
    if results.get("note"):
        out += ["", f"**Note:** {results['note']}"]

    out += ["", "## Targets", "", "| Target | Measured | |", "| --- | --- | --- |"]
    out += [f"| {t} | {v} | {_verdict(ok)} |" for t, v, ok in targets(results)]

    conv = results.get("converge")
    if conv and conv["runs"]:
        out += [
            "",
            "## Converge (site.yml)",
            "",
            f"Measured {conv['measured_at']}. One broker, N worker hosts, one Flower host (and the web "
            "host, which site.yml does not touch). *Fresh*: the first `ansible-playbook site.yml` on "
            "new hosts (created and prepared before the clock starts); *re-run*: the same command at "
            "once again, which should change nothing; *re-run with Mitogen*: once more, with "
            '`ANSIBLE_STRATEGY=mitogen_linear` (README, "Faster runs with Mitogen"). *Task runs*: '
            "the re-run's task results that ran (ok, over every host; skipped ones cost the controller "
            "only). *No-op task*: one `ansible.builtin.ping` task on every host of the lab, the mean of "
            "20: Ansible's own cost of a module run here, with the project's ansible.cfg.",
            "",
            "| Worker hosts | Fresh converge (s) | Re-run (s) | Changed on re-run | Re-run with Mitogen (s) "
            "| Task runs in the re-run | No-op task, every host (s) | Load avg after fresh |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in conv["runs"]:
            cold = "" if r.get("wheelhouse_warm", True) else " (incl. wheelhouse download)"
            mitogen = r.get("rerun_mitogen")
            mitogen_cell = (
                "-" if not mitogen else f"{_fmt(mitogen['seconds'])} ({mitogen['changed']} changed)"
            )
            noop = r.get("noop_tasks")
            out.append(
                f"| {r['workers']} | {_fmt(r['fresh']['seconds'])}{cold} | {_fmt(r['rerun']['seconds'])} | "
                f"{r['rerun']['changed']} | {mitogen_cell} | {r['rerun'].get('task_runs', '-')} | "
                f"{noop['per_task_all_hosts'] if noop else '-'} | {r['fresh']['loadavg_after']} |"
            )
        last = conv["runs"][-1]
        noop, runs = last.get("noop_tasks"), last["rerun"].get("task_runs")
        if noop and runs:
            priced = runs * noop["per_task_and_host"]
            out += [
                "",
                f"With {last['workers']} worker host(s), a no-op module costs {noop['per_task_and_host']} s "
                f"per task and host ({noop['per_task_all_hosts']} s for a task on all {noop['hosts']} "
                f"hosts); the re-run's {runs} task runs at that price come to {priced:.0f} s of its "
                f"{_fmt(last['rerun']['seconds'])} s.",
            ]
        by_host = last["rerun"].get("task_runs_by_host")
        modules = last["rerun"].get("module_runs_by_host") or {}
        if by_host:
            out += [
                "",
                f"Per host in the re-run with {last['workers']} worker host(s): task results that ran "
                "(the recap's ok), and in brackets those that ran a module on the host (the rest ran on "
                "the controller alone: assert, set_fact, include_vars, argument specs, delegated "
                "tasks): "
                + ", ".join(f"{h} {n} ({modules.get(h, '-')})" for h, n in sorted(by_host.items()))
                + ".",
            ]
        out += ["", f"Slowest tasks of the fresh converge with {last['workers']} worker host(s):", ""]
        out += [f"- {name}: {sec:.1f} s" for name, sec in last["fresh"]["slowest_tasks"]]
        changed = [r for r in conv["runs"] if r["rerun"]["changed"]]
        for r in changed:
            out.append(
                f"- **re-run with {r['workers']} worker host(s) changed {r['rerun']['changed']} task(s)**: "
                f"{r['rerun']['changed_by_host']}"
            )

    floor = results.get("floor")
    if floor:
        s = floor["seconds"]
        out += [
            "",
            "## Floor: the same installs by hand on one host",
            "",
            f"Measured {floor['measured_at']} on one fresh container of the same image: "
            f"`apt-get update`, {_floor_installs(floor)}, then a venv and "
            "`pip install --no-index` of the lock file and the app's wheel from the wheelhouse.",
            "",
            "| apt-get update (s) | apt-get install (s) | venv + pip (s) | Total (s) |",
            "| ---: | ---: | ---: | ---: |",
            f"| {_fmt(s['apt_update'])} | {_fmt(s['apt_install'])} | {_fmt(s['venv_pip'])} | "
            f"{_fmt(floor['total_seconds'])} |",
        ]

    tp = results.get("throughput")
    if tp:
        out += [
            "",
            "## Throughput",
            "",
            f"Measured {tp['measured_at']} on a lab with {tp['worker_hosts']} worker host(s). Downloads "
            f"fetch from an HTTP server on the lab's web host that answers each request after "
            f"{tp.get('delay_ms', 100):.0f} ms (1 KiB bodies); tasks are sent from the Flower host by "
            f"{tp.get('senders', 1)} sender process(es), each with one connection and one producer (with "
            "publisher confirms: each send waits for the broker's confirm), and each collects its own "
            "results (rpc:// backend). Tasks/s = succeeded tasks over the time from the first send of any "
            "sender to the last result of any.",
            "",
            "| Run | Worker pool | Tasks | Succeeded | Seconds | Tasks/s |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (
            ("tutorial", "downloads, tutorial's settings"),
            ("defaults", "downloads, project defaults"),
            ("noop", "no-op (`celery.accumulate`), defaults"),
        ):
            entry = tp.get(key)
            if not entry:
                continue
            run = entry["run"]
            pools = entry.get("pools", tp.get("defaults", {}).get("pools", {})).get("nodes", {})
            pool = ", ".join(
                sorted(
                    {f"{_pool_name(p['implementation'])} x {p['max-concurrency']}" for p in pools.values()}
                )
            )
            note = " (timed out)" if run["timed_out"] else ""
            out.append(
                f"| {label} | {pool or '?'} | {run['requested']} | {run['succeeded']}{note} | "
                f"{_fmt(run['seconds'], 2)} | {_fmt(run['per_second'])} |"
            )
    out += ["", "![benchmark chart](latest.png)", ""]
    return "\n".join(out)


def chart(results: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    conv = (results.get("converge") or {}).get("runs", [])
    if conv:
        labels = [str(r["workers"]) for r in conv]
        xs = range(len(conv))
        width = 0.27
        fresh = [r["fresh"]["seconds"] for r in conv]
        left.bar([x - width for x in xs], fresh, width, label="fresh converge")
        left.bar(list(xs), [r["rerun"]["seconds"] for r in conv], width, label="re-run")
        left.bar(
            [x + width for x in xs],
            [(r.get("rerun_mitogen") or {}).get("seconds", 0) for r in conv],
            width,
            label="re-run, Mitogen",
        )
        left.set_xticks(list(xs), labels)
        floor = results.get("floor")
        if floor:
            left.axhline(
                floor["total_seconds"], color="grey", linestyle="--", label="installs by hand (floor)"
            )
        left.axhline(30, color="red", linestyle=":", linewidth=1, label="re-run target (30 s)")
        left.legend(fontsize=8)
    left.set_xlabel("worker hosts")
    left.set_ylabel("seconds")
    left.set_title("site.yml on the local lab")
    tp = results.get("throughput") or {}
    names, values = [], []
    for key, label in (
        ("tutorial", "downloads\ntutorial"),
        ("defaults", "downloads\ndefaults"),
        ("noop", "no-op"),
    ):
        rate = (tp.get(key) or {}).get("run", {}).get("per_second")
        if rate is not None:
            names.append(label)
            values.append(rate)
    bars = right.bar(names, values, color=["tab:gray", "tab:green", "tab:blue"][: len(values)])
    right.bar_label(bars, fmt="%.0f")
    right.set_ylabel("tasks per second")
    right.set_title(f"throughput ({tp.get('worker_hosts', '?')} worker host, 100 ms server)")
    m = results.get("machine", {})
    fig.suptitle(
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {results.get('started_at', '')}", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(results: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    md, png = directory / "latest.md", directory / "latest.png"
    md.write_text(markdown(results))
    chart(results, png)
    return md, png
