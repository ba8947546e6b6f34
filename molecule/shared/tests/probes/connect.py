"""TCP connection attempts from one host, all at once. Arguments: DESTINATION:PORT ...

Prints a JSON object that maps each "destination:port" to "open" or the error's class name and
message. Hosts share one network: an open port answers within milliseconds, a dropped one never
(2 s, then give up).
"""

import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor


def attempt(target):
    dst, port = target.rsplit(":", 1)
    try:
        socket.create_connection((dst, int(port)), timeout=2).close()
        return "open"
    except OSError as exc:
        return f"{type(exc).__name__} {exc}"


targets = sorted(set(sys.argv[1:]))
with ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(dict(zip(targets, pool.map(attempt, targets), strict=True))))
