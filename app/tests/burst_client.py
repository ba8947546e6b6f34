"""Client of test_load.py, run as a subprocess with the burst's own configuration
(``DOWNLOADER_CONFIG``): sends COUNT downloads of URL (files burst-NNNNNN.bin) on one
producer, then waits for every result until DEADLINE seconds after the start. Prints one JSON
object: requested, succeeded, failed, seconds.

    python burst_client.py COUNT URL DEADLINE
"""

from __future__ import annotations

import json
import sys
import time

from celery.exceptions import TimeoutError as CeleryTimeoutError

from downloaderApp import app, download


def main() -> int:
    count, url, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    start = time.monotonic()
    deadline = start + limit
    with app.producer_or_acquire() as producer:
        results = [
            download.apply_async((url, f"burst-{i:06d}.bin"), producer=producer)
            for i in range(count)
        ]
    succeeded = failed = 0
    for result in results:
        try:
            result.get(timeout=max(deadline - time.monotonic(), 0.1), propagate=False)
        except CeleryTimeoutError:
            break
        if result.successful():
            succeeded += 1
        else:
            failed += 1
    seconds = round(time.monotonic() - start, 1)
    print(
        json.dumps(
            {"requested": count, "succeeded": succeeded, "failed": failed, "seconds": seconds}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
