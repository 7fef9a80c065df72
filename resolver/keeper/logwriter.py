"""The query-log keeper child: reads the server's records and writes the query log.

Run by the server as `python -m aidns.resolver.keeper.logwriter --fd N ...`, with one end of a
socket pair. Records arrive on it; after each batch written, one JSON line goes back with the
counts so far: `{"written": W, "dropped": D, "mirror_dropped": M}`. The server says stop by
closing its end: what is queued is written, the last counts are sent, and the child exits.
Signals meant for the whole service are ignored, so that nothing queued is lost on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

from aidns.resolver.config import LOG_FORMAT, QueryLogConfig
from aidns.resolver.querylog.records import FormatError, RecordDecoder
from aidns.resolver.querylog.writer import QueryLog

log = logging.getLogger(__name__)

READ_BYTES = 1 << 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidns-logwriter")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--config", required=True, help="QueryLogConfig fields as JSON")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format=LOG_FORMAT)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    link = socket.socket(fileno=args.fd)
    sending = threading.Lock()
    querylog: QueryLog

    def report() -> None:
        counts = {
            "written": querylog.written,
            "dropped": querylog.dropped,
            "mirror_dropped": querylog.mirror_dropped,
        }
        with sending:
            link.sendall(json.dumps(counts).encode() + b"\n")

    querylog = QueryLog(
        args.db,
        QueryLogConfig(**json.loads(args.config)),
        wait_when_full=True,
        says_drops=False,  # the server says them, with its own
        after_write=report,
    )
    querylog.start()
    decoder = RecordDecoder()
    try:
        while chunk := link.recv(READ_BYTES):
            querylog.take_all(decoder.feed(chunk))
    except FormatError as exc:
        log.error("query log: the server sent %s; writing what came before", exc)
    except OSError as exc:
        log.error("query log: reading the server's records: %s", exc.strerror or exc)
    finally:
        querylog.stop()
        with contextlib.suppress(OSError):  # the server is gone; its count of what it sent stands
            report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
