"""Submits COUNT downloads with the tutorial's download.delay, spread over SPREAD seconds, from
one client process (one connection). Arguments: PREFIX COUNT SPREAD URL. Run with the app's
venv. Prints one JSON line: the sent count and the failed submissions.
"""

import json
import sys
import time

from downloaderApp import download

prefix, count, spread, url = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
sent, failed, start = 0, [], time.monotonic()
for i in range(count):
    name = f"{prefix}-{i:04d}.bin"
    try:
        download.delay(url, name)
        sent += 1
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
    pause = start + spread * (i + 1) / count - time.monotonic()
    if pause > 0:
        time.sleep(pause)
print(json.dumps({"sent": sent, "failed": failed}))
