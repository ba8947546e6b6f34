"""A GET of Prometheus's HTTP API on the monitoring host itself (its port admits no other host).
Arguments: PORT PATH (after /api/v1/). Prints the answer's body.
"""

import sys
import urllib.request

url = f"http://127.0.0.1:{sys.argv[1]}/api/v1/{sys.argv[2]}"
with urllib.request.urlopen(url, timeout=10) as resp:
    print(resp.read().decode())
