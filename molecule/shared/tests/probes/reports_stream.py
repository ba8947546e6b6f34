"""Submits COUNT count_words tasks of the reports app over SPREAD seconds from one client process
(one connection, one reply queue), then waits up to WAIT seconds in all for their results. Run
with the reports app's venv and configuration module (CELERY_CONFIG_MODULE, PYTHONPATH).
Arguments: COUNT SPREAD WAIT. Prints one JSON line: the ids sent in order, the failed
submissions, and the results that came back ({id: words}).
"""

import contextlib
import json
import sys
import time

from reportsApp import count_words

count, spread, wait = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
sent, failed, start = [], [], time.monotonic()
for i in range(count):
    try:
        sent.append(count_words.delay(" ".join(["word"] * (i % 7 + 1))))
    except Exception as exc:
        failed.append(f"{i}: {exc!r}")
    pause = start + spread * (i + 1) / count - time.monotonic()
    if pause > 0:
        time.sleep(pause)
results, deadline = {}, time.monotonic() + wait
for result in sent:
    # A result on its way to a reply queue lost with its broker node does not come.
    with contextlib.suppress(Exception):
        results[result.id] = result.get(timeout=max(0.1, deadline - time.monotonic()))
print(json.dumps({"sent": [r.id for r in sent], "failed": failed, "results": results}))
