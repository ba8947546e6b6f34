"""A TCP connection from a chosen local address. Arguments: SOURCE DESTINATION PORT.

Prints "open", or the error's class name (a dropped port gives up after 3 s).
"""

import socket
import sys

src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sock = socket.socket()
sock.settimeout(3)
try:
    sock.bind((src, 0))
    sock.connect((dst, port))
    print("open")
except OSError as exc:
    print(type(exc).__name__)
