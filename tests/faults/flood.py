"""A seeded flood of mutated queries, and the bound every reply to it must keep.

Each packet is a well-formed query with one to three mutations: flipped bits (often in the
header), a replaced byte, a cut, appended or inserted junk, a changed section count, or a
second OPT record. Packets go out in batches, each from its own socket with an ID unique
within it, so every reply is matched to the packet it answers.

The bound (RFC 6891 and what amplification demands): no reply to a packet with QR set; a
reply to a malformed packet (one dnspython cannot read) no longer than that packet; a
reply to a well-formed one within the client's UDP size (512, or its EDNS payload size).
"""

from __future__ import annotations

import random
import selectors
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.helpers.dnsserver import FakeNameserver, Received

SEED = 20_261_129
BATCH = 500  # packets per socket; IDs 0..BATCH-1 within it
ANSWER_RECORDS = 20  # so that an answer is far larger than a question (~350 bytes)
ZONE = "flood.test"
SECOND_OPT = b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00"


def seeds() -> list[bytes]:
    """Well-formed queries of the shapes stub resolvers send."""
    cookie = dns.edns.CookieOption(b"\x01\x02\x03\x04\x05\x06\x07\x08", b"")
    made = [
        dns.message.make_query(f"www.{ZONE}", "A"),
        dns.message.make_query(f"a.b.{ZONE}", "A", use_edns=0, payload=4096, want_dnssec=True),
        dns.message.make_query(f"x.{ZONE}", "AAAA", use_edns=0, payload=1232),
        dns.message.make_query(f"t.{ZONE}", "TXT", use_edns=0, options=[cookie]),
        dns.message.make_query(f"mail.{ZONE}", "MX"),
        dns.message.make_query(f"c.{ZONE}", "A", use_edns=0, payload=1232),
    ]
    return [message.to_wire() for message in made]


def mutate(rng: random.Random, wire: bytes) -> bytes:
    data = bytearray(wire)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        if kind <= 1 and data:  # a flipped bit, half the time in the header's flags and counts
            index = rng.randrange(2, min(12, len(data))) if kind and len(data) > 2 else None
            index = rng.randrange(len(data)) if index is None else index
            data[index] ^= 1 << rng.randrange(8)
        elif kind == 2 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 3:
            del data[rng.randrange(len(data) + 1) :]
        elif kind == 4:
            data += rng.randbytes(rng.randint(1, 16))
        elif kind == 5:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 6 and len(data) >= 12:
            offset = 4 + 2 * rng.randrange(4)
            struct.pack_into("!H", data, offset, rng.randrange(4))
        elif kind == 7 and len(data) >= 12:
            data += SECOND_OPT
            struct.pack_into("!H", data, 10, struct.unpack_from("!H", data, 10)[0] + 1)
    return bytes(data)


def packets(count: int, seed: int = SEED) -> Iterator[bytes]:
    rng = random.Random(seed)
    shapes = seeds()
    for _ in range(count):
        yield mutate(rng, rng.choice(shapes))


def udp_limit(packet: bytes) -> int | None:
    """The reply size a well-formed query allows; None for a malformed packet."""
    try:
        message = dns.message.from_wire(packet)
    except (dns.exception.DNSException, ValueError, IndexError, struct.error):
        return None
    return max(message.payload, 512) if message.edns >= 0 else 512


@dataclass
class FloodReport:
    sent: int = 0
    replies: int = 0
    violations: list[str] = field(default_factory=list)

    def check(self, packet: bytes, reply: bytes) -> None:
        self.replies += 1
        if len(packet) >= 3 and packet[2] & 0x80:
            self.violations.append(f"a reply to a packet with QR set: {packet.hex()}")
        elif len(reply) > len(packet):
            limit = udp_limit(packet)
            if limit is None:
                self.violations.append(
                    f"{len(reply)}-byte reply to a malformed {len(packet)}-byte packet "
                    f"{packet.hex()}"
                )
            elif len(reply) > limit:
                self.violations.append(f"{len(reply)}-byte reply over the client's {limit}")


def flood(port: int, count: int, seed: int = SEED, quiet_s: float = 0.02) -> FloodReport:
    """Send `count` mutated packets in batches, each batch's replies read until it goes quiet."""
    report = FloodReport()
    selector = selectors.DefaultSelector()
    batches: dict[socket.socket, dict[int, bytes]] = {}
    stream = packets(count, seed)
    try:
        while report.sent < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_READ)
            sent: dict[int, bytes] = {}
            batches[sock] = sent
            for number in range(min(BATCH, count - report.sent)):
                packet = next(stream)
                if len(packet) >= 2:
                    packet = struct.pack("!H", number) + packet[2:]
                sent[number] = packet
                _send(sock, packet)
                report.sent += 1
                if number % 50 == 49:
                    _drain(selector, batches, report, 0.0)
            _drain(selector, batches, report, quiet_s)
            _retire(selector, batches, keep=8)
        _drain(selector, batches, report, 1.0)
    finally:
        for sock in batches:
            sock.close()
        selector.close()
    return report


def _send(sock: socket.socket, packet: bytes) -> None:
    for _attempt in range(100):
        try:
            sock.send(packet)
            return
        except BlockingIOError:
            time.sleep(0.001)


def _drain(
    selector: selectors.BaseSelector,
    batches: dict[socket.socket, dict[int, bytes]],
    report: FloodReport,
    quiet_s: float,
) -> None:
    """Read replies until none came for `quiet_s` (0: only what is there now)."""
    while True:
        ready = selector.select(timeout=quiet_s)
        if not ready:
            return
        for key, _ in ready:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    reply = sock.recv(65535)
                except BlockingIOError:
                    break
                packet = batches[sock].get(int.from_bytes(reply[:2], "big")) if reply else None
                if packet is None:
                    report.violations.append(f"a reply matching no packet: {reply[:40].hex()}")
                else:
                    report.check(packet, reply)


def _retire(
    selector: selectors.BaseSelector, batches: dict[socket.socket, dict[int, bytes]], keep: int
) -> None:
    """Close all but the newest `keep` batch sockets: their late replies had time to come."""
    for sock in list(batches)[:-keep]:
        selector.unregister(sock)
        sock.close()
        del batches[sock]


class FloodUpstream(FakeNameserver):
    """Answers what it can read with ANSWER_RECORDS A records, refuses classes other than IN,
    and, as real servers do, says FORMERR with a bare header to what it cannot read, and
    SERVFAIL to what it can read but not answer (a response, say)."""

    def replies(self, wire: bytes, transport: str, peer: tuple[str, int]) -> list[bytes]:
        with self._lock:
            self.received.append(Received(transport, wire[:64], "", peer))
        try:
            query = dns.message.from_wire(wire)
        except (dns.exception.DNSException, ValueError, IndexError, struct.error):
            if len(wire) < 12:
                return []
            return [wire[:2] + bytes((0x80 | (wire[2] & 0x79), dns.rcode.FORMERR)) + bytes(8)]
        try:
            return [self._answer(query)]
        except (dns.exception.DNSException, ValueError):
            return [wire[:2] + bytes((0x80 | (wire[2] & 0x79), dns.rcode.SERVFAIL)) + bytes(8)]

    def _answer(self, query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
        elif question.rdtype == dns.rdatatype.A:
            addresses = [f"192.0.2.{index + 1}" for index in range(ANSWER_RECORDS)]
            response.answer.append(
                dns.rrset.from_text(question.name, self.ttl_s, "IN", "A", *addresses)
            )
        return response.to_wire()
