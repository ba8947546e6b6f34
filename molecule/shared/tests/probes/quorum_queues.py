"""Declare (declare) or delete (delete) the durable quorum queues PREFIX-0 .. PREFIX-(COUNT-1)
on the app's vhost, with this host's configuration and broker user (a worker host's may
configure queues)."""

import sys

from downloaderApp.celery_app import app

action, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with app.connection_for_write() as conn:
    channel = conn.channel()
    for index in range(count):
        name = f"{prefix}-{index}"
        if action == "declare":
            channel.queue_declare(name, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
        else:
            channel.queue_delete(name)
print(f"{action}d {count}")
