"""What this host's broker user may do to the task queue QUEUE (first argument), with the app's
own configuration: consume, get, purge and delete are each tried on a channel of their own.
Prints a JSON object that maps each to "allowed" or RabbitMQ's refusal. Second argument,
optional: the module whose `app` is the Celery app (default the downloader's)."""

import importlib
import json
import sys

from amqp.exceptions import AccessRefused

queue = sys.argv[1]
app = importlib.import_module(sys.argv[2] if len(sys.argv) > 2 else "downloaderApp.celery_app").app
said = {}
for what in ("consume", "get", "purge", "delete"):
    with app.connection_for_read() as conn:
        channel = conn.channel()
        try:
            if what == "consume":
                channel.basic_consume(queue, callback=lambda message: None)
            elif what == "get":
                channel.basic_get(queue)
            elif what == "purge":
                channel.queue_purge(queue)
            else:
                channel.queue_delete(queue)
            said[what] = "allowed"
        except AccessRefused as exc:
            said[what] = str(exc)
print(json.dumps(said))
