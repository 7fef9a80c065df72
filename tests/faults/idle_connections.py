"""A child process holding many idle TCP connections, more than a test process may open.

Run as `python -m tests.faults.idle_connections HOST PORT COUNT`: it opens COUNT connections
one after another and prints `opened N FAILED`; then, for each `check` line on its standard
input, it prints the indices of the connections the server has closed, as JSON. It exits
when its standard input closes.
"""

from __future__ import annotations

import json
import socket
import sys
import time

OPENING_BUDGET_S = 30.0  # a server that stopped accepting must not hold the test for long


def closed_by_peer(sock: socket.socket | None) -> bool:
    if sock is None:
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def main(host: str, port: int, count: int) -> None:
    held: list[socket.socket | None] = []
    deadline = time.monotonic() + OPENING_BUDGET_S
    for _ in range(count):
        if time.monotonic() > deadline:
            held.append(None)
            continue
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(3)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            held.append(None)
            continue
        sock.setblocking(False)
        held.append(sock)
    failed = sum(sock is None for sock in held)
    print(f"opened {count - failed} {failed}", flush=True)
    for line in sys.stdin:
        if line.strip() == "check":
            closed = [index for index, sock in enumerate(held) if closed_by_peer(sock)]
            print(json.dumps(closed), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
