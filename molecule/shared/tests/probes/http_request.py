"""An HTTP request from a host. Arguments: METHOD URL AUTH BODY CAFILE (AUTH "user:password" or
empty; HTTPS verified against CAFILE). Prints the status code, then the body.
"""

import base64
import ssl
import sys
import urllib.error
import urllib.request

method, url, auth, body, cafile = sys.argv[1:6]
req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
if auth:
    req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
ctx = ssl.create_default_context(cafile=cafile)
try:
    with urllib.request.urlopen(req, timeout=15, context=ctx) as resp:
        print(resp.status)
        print(resp.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code)
    print(exc.read().decode())
