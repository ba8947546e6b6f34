"""A durable classic queue on one broker, with persistent messages left in it, declared and
filled with the app's venv (kombu). Arguments: URL CAFILE NAME COUNT. A classic queue lives on
the node of the connection that declared it."""

import ssl
import sys

import amqp
from kombu import Connection

url, cafile, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tls = {"ca_certs": cafile, "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": None}
with Connection(url, ssl=tls, connect_timeout=5) as conn:
    channel = conn.default_channel
    channel.confirm_select()
    channel.queue_declare(name, durable=True, auto_delete=False, arguments={"x-queue-type": "classic"})
    for _ in range(count):
        channel.basic_publish(amqp.Message(b"left behind", delivery_mode=2), exchange="", routing_key=name)
print("filled")
