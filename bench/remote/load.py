"""Load client of the throughput benchmark, run on a lab host inside the test network with the
app's venv (/opt/downloader/venv/bin/python) and configuration (/etc/downloader, as root).

    load.py nodes --expect N [--timeout S]      wait until N worker nodes answer; print their pools
    load.py download --count C --url URL --prefix P [--timeout S]
    load.py noop --count C [--timeout S]

One connection and one producer send every task, then every result is collected through the
app's result backend (rpc://). Prints one JSON object: counts, seconds and tasks per second,
timed from the first send to the last result. Bounded: at most --timeout seconds per phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from celery.exceptions import TimeoutError as CeleryTimeoutError
from downloaderApp import app, download


def nodes(expect: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = app.control.inspect(timeout=2.0).stats() or {}
        if len(stats) >= expect:
            break
        time.sleep(1.0)
    pools = {
        name: {
            "implementation": node.get("pool", {}).get("implementation"),
            "max-concurrency": node.get("pool", {}).get("max-concurrency"),
        }
        for name, node in sorted(stats.items())
    }
    return {"expected": expect, "answered": len(stats), "nodes": pools}


def run(kind: str, count: int, timeout: float, url: str = "", prefix: str = "") -> dict[str, Any]:
    def send(i: int, producer: Any) -> Any:
        if kind == "download":
            return download.apply_async(
                (f"{url}{prefix}-{i}", f"{prefix}-{i:06d}.bin"), {"overwrite": True}, producer=producer
            )
        # A built-in task of every Celery app: returns its arguments, does nothing else.
        return app.send_task("celery.accumulate", args=(i,), producer=producer)

    deadline = time.monotonic() + timeout
    results = []
    with app.producer_or_acquire() as producer:
        start = time.monotonic()
        for i in range(count):
            results.append(send(i, producer))
            if time.monotonic() > deadline:
                break
        sent = time.monotonic()
    succeeded = failed = 0
    errors: dict[str, int] = {}
    timed_out = False
    last = sent
    for result in results:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        try:
            result.get(timeout=remaining, propagate=False)
        except CeleryTimeoutError:
            timed_out = True
            break
        last = time.monotonic()
        if result.successful():
            succeeded += 1
        else:
            failed += 1
            key = type(result.result).__name__
            errors[key] = errors.get(key, 0) + 1
    elapsed = last - start
    return {
        "kind": kind,
        "requested": count,
        "sent": len(results),
        "succeeded": succeeded,
        "failed": failed,
        "errors": errors,
        "timed_out": timed_out,
        "send_seconds": round(sent - start, 3),
        "seconds": round(elapsed, 3),
        "send_per_second": round(len(results) / (sent - start), 1) if sent > start else None,
        "per_second": round(succeeded / elapsed, 1) if elapsed > 0 else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_nodes = sub.add_parser("nodes")
    p_nodes.add_argument("--expect", type=int, required=True)
    p_nodes.add_argument("--timeout", type=float, default=120)
    for name in ("download", "noop"):
        p = sub.add_parser(name)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--timeout", type=float, default=300)
        p.add_argument("--warmup", type=int, default=20)
        if name == "download":
            p.add_argument("--url", required=True)
            p.add_argument("--prefix", required=True)
    args = parser.parse_args()
    if args.cmd == "nodes":
        out = nodes(args.expect, args.timeout)
    else:
        kw = {"url": args.url, "prefix": args.prefix} if args.cmd == "download" else {}
        if args.warmup:
            # Connections, queues and the reply consumer set up before the clock starts.
            warm = {**kw, "prefix": kw["prefix"] + "-warmup"} if kw else {}
            run(args.cmd, args.warmup, min(args.timeout, 60), **warm)
        out = run(args.cmd, args.count, args.timeout, **kw)
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
