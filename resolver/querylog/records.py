"""The binary records that carry finished queries from the server to the query-log keeper.

A query is one fixed-size header followed by its name and response bytes. What repeats from
query to query (the client address, the process, the decision, the upstream) is sent once as
a definition and then named by a number. Numbers only grow, so a record can never name
another definition than the one it was encoded against; the encoder forgets every definition
after `MAX_DEFINITIONS` and says so with a reset frame, which keeps both sides bounded.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

from aidns.resolver.query import Action, Decision, ProcessInfo, Query, Transport

QUERY, DEFINE, RESET = 1, 2, 3
CLIENT, PROCESS, DECISION, UPSTREAM = 1, 2, 3, 4
# kind, wall time, latency, count, client port, transport, qtype, question end, client,
# process, decision, upstream, name length, response length
QUERY_HEADER = struct.Struct("<BdfIHBHHIIIIBH")
_pack_query = QUERY_HEADER.pack
DEFINE_HEADER = struct.Struct("<BBIH")  # kind, what, number, length of the JSON value
MAX_DEFINITIONS = 4096
TRANSPORTS = (Transport.UDP, Transport.TCP)
_TRANSPORT_CODES = {Transport.UDP: 0, Transport.TCP: 1}


class RecordEncoder:
    """Appends records to a buffer; used under the caller's lock."""

    def __init__(self) -> None:
        self._next = 1
        self._defined = 0  # since the last reset
        self._clients: dict[str, int] = {}
        self._processes: dict[int, tuple[ProcessInfo, int]] = {}  # by id(): no hashing of fields
        self._decisions: dict[Decision, int] = {}
        self._upstreams: dict[str, int] = {}

    def add(self, out: bytearray, query: Query, count: int, wall_offset: float) -> None:
        """Append `query`'s record; its wall time is its answer time plus `wall_offset`."""
        if self._defined >= MAX_DEFINITIONS:
            self._forget(out)
        client = query.client
        address = client[0] if client else ""
        client_ref = self._clients.get(address) or self._define_client(out, address)
        process = query.process
        process_ref = 0
        if process is not None:
            known = self._processes.get(id(process))
            if known is not None and known[0] is process:
                process_ref = known[1]
            else:
                process_ref = self._define(out, PROCESS, _process_value(process))
                self._processes[id(process)] = (process, process_ref)
        decision = query.decision
        decision_ref = 0
        if decision is not None:
            decision_ref = self._decisions.get(decision) or self._define_decision(out, decision)
        upstream = query.upstream
        upstream_ref = 0
        if upstream:
            upstream_ref = self._upstreams.get(upstream) or self._define_upstream(out, upstream)
        qname = query.qname
        response = query.response or b""
        answered_at = query.answered_at
        out += _pack_query(
            QUERY,
            answered_at + wall_offset,
            answered_at - query.received_at,
            count,
            client[1] if len(client) > 1 else 0,
            _TRANSPORT_CODES[query.transport],
            query.qtype,
            query.question_end if response else 0,
            client_ref,
            process_ref,
            decision_ref,
            upstream_ref,
            len(qname),
            len(response),
        )
        out += qname
        out += response

    def _define_client(self, out: bytearray, address: str) -> int:
        ref = self._clients[address] = self._define(out, CLIENT, str(address))
        return ref

    def _define_decision(self, out: bytearray, decision: Decision) -> int:
        ref = self._decisions[decision] = self._define(out, DECISION, decision)
        return ref

    def _define_upstream(self, out: bytearray, upstream: str) -> int:
        ref = self._upstreams[upstream] = self._define(out, UPSTREAM, upstream)
        return ref

    def definitions(self) -> bytes:
        """Every definition in force, for a keeper that starts afresh."""
        out = bytearray()
        for address, ref in self._clients.items():
            _put_definition(out, CLIENT, ref, address)
        for process, ref in self._processes.values():
            _put_definition(out, PROCESS, ref, _process_value(process))
        for decision, ref in self._decisions.items():
            _put_definition(out, DECISION, ref, decision)
        for upstream, ref in self._upstreams.items():
            _put_definition(out, UPSTREAM, ref, upstream)
        return bytes(out)

    def _define(self, out: bytearray, what: int, value: Any) -> int:
        ref = self._next
        self._next += 1
        self._defined += 1
        _put_definition(out, what, ref, value)
        return ref

    def _forget(self, out: bytearray) -> None:
        self._clients.clear()
        self._processes.clear()
        self._decisions.clear()
        self._upstreams.clear()
        self._defined = 0
        out.append(RESET)


def _process_value(process: ProcessInfo) -> list[Any]:
    return [
        process.pid,
        process.name,
        process.exe,
        process.cmdline,
        process.uid,
        process.tool,
        process.user,
        process.relay,
        process.note,
    ]


def _put_definition(out: bytearray, what: int, ref: int, value: Any) -> None:
    data = json.dumps(value, separators=(",", ":")).encode()
    if len(data) > 0xFFFF:
        data = json.dumps(None).encode()  # a cmdline that long is not worth the log row
    out += DEFINE_HEADER.pack(DEFINE, what, ref, len(data))
    out += data


class DecodedQuery:
    """One query as the keeper's log reads it: the fields `QueryLog.take` needs."""

    __slots__ = (
        "address",
        "count",
        "decision",
        "latency_s",
        "port",
        "process",
        "qname",
        "qtype",
        "question_end",
        "response",
        "transport",
        "upstream",
        "wall",
    )

    def __init__(self, fields: tuple[Any, ...], qname: bytes, response: bytes) -> None:
        (_kind, self.wall, self.latency_s, self.count, self.port, transport, self.qtype) = fields[
            :7
        ]
        self.question_end = fields[7]
        self.transport = TRANSPORTS[transport] if transport < len(TRANSPORTS) else Transport.UDP
        self.qname = qname
        self.response = response or None
        self.address: str | None = None
        self.process: ProcessInfo | None = None
        self.decision: Decision | None = None
        self.upstream: str | None = None


class FormatError(ValueError):
    """The stream is not made of records this version writes."""


class RecordDecoder:
    """Turns a byte stream, fed in chunks of any size, back into queries."""

    def __init__(self) -> None:
        self._rest = b""
        self._definitions: dict[int, Any] = {}

    def feed(self, chunk: bytes) -> Iterator[DecodedQuery]:
        data = self._rest + chunk if self._rest else chunk
        pos = 0
        end = len(data)
        definitions = self._definitions
        while pos < end:
            kind = data[pos]
            if kind == QUERY:
                if end - pos < QUERY_HEADER.size:
                    break
                fields = QUERY_HEADER.unpack_from(data, pos)
                start = pos + QUERY_HEADER.size
                stop = start + fields[12] + fields[13]
                if stop > end:
                    break
                query = DecodedQuery(
                    fields, data[start : start + fields[12]], data[start + fields[12] : stop]
                )
                client, process, decision, upstream = fields[8:12]
                query.address = definitions.get(client)
                query.process = definitions.get(process) if process else None
                query.decision = definitions.get(decision) if decision else None
                query.upstream = definitions.get(upstream) if upstream else None
                pos = stop
                yield query
            elif kind == DEFINE:
                if end - pos < DEFINE_HEADER.size:
                    break
                _kind, what, ref, length = DEFINE_HEADER.unpack_from(data, pos)
                start = pos + DEFINE_HEADER.size
                if start + length > end:
                    break
                definitions[ref] = _definition(what, json.loads(data[start : start + length]))
                pos = start + length
            elif kind == RESET:
                definitions.clear()
                pos += 1
            else:
                raise FormatError(f"unknown record kind {kind} at byte {pos}")
        self._rest = data[pos:]


def _definition(what: int, value: Any) -> Any:
    if what == PROCESS and isinstance(value, list) and len(value) == 9:
        pid, name, exe, cmdline, uid, tool, user, relay, note = value
        return ProcessInfo(pid, name, exe, cmdline, uid, tool, user, bool(relay), note)
    if what == DECISION and isinstance(value, list) and len(value) == 3:
        return Decision(Action(value[0]), value[1], value[2])
    if what in (CLIENT, UPSTREAM) and isinstance(value, str):
        return value
    return None
