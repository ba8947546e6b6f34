"""An AMQP login with the app's venv (kombu, as the app connects). Arguments: URL CAFILE CERTFILE
KEYFILE: TLS when CAFILE is given (the broker's certificate and host name verified), with a
client certificate when CERTFILE is given. Prints "open", or the kind of failure and the
exception.
"""

import ssl
import sys

import amqp.exceptions
from kombu import Connection

url, cafile, certfile, keyfile = sys.argv[1:5]
tls = False
if cafile:
    tls = {"ca_certs": cafile, "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
    if certfile:
        tls.update(certfile=certfile, keyfile=keyfile)
conn = Connection(url, ssl=tls, connect_timeout=5)
try:
    conn.connect()
    print("open")
except (amqp.exceptions.AccessRefused, amqp.exceptions.NotAllowed) as exc:
    print("refused", type(exc).__name__, exc)
except ssl.SSLError as exc:
    print("tls-error", type(exc).__name__, exc)
except Exception as exc:
    print("error", type(exc).__name__, exc)
finally:
    conn.release()
