"""resolv.conf: the nameservers a system's resolver asks, read by one set of rules."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

RESOLV_CONF = "/etc/resolv.conf"
# systemd-resolved's list of the servers it asks itself, beside its stub's resolv.conf.
RESOLVED_UPLINKS = "/run/systemd/resolve/resolv.conf"
RESOLV_CONF_PATHS = (Path(RESOLV_CONF), Path(RESOLVED_UPLINKS))
# The addresses of systemd-resolved's stub listeners.
RESOLVED_STUBS = ("127.0.0.53", "127.0.0.54")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> IPAddress | None:
    """`text` as an IP address, a `%scope` (fe80::1%eth0) left out; None when it is not one."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def is_loopback(text: str) -> bool:
    """Whether `text` is a loopback address (127.0.0.0/8, ::1); False for what is no address."""
    address = parse_address(text)
    return address is not None and address.is_loopback


def is_this_host(text: str) -> bool:
    """Whether `text` is an address that reaches this host itself: loopback, or unspecified
    (0.0.0.0, ::); False for what is no address."""
    address = parse_address(text)
    return address is not None and (address.is_loopback or address.is_unspecified)


def read_text(path: Path) -> str:
    """The file's text, bytes that are not UTF-8 replaced; "" when it cannot be read."""
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def nameserver_fields(text: str) -> list[str]:
    """The address of each `nameserver` line, in order and as written (a `%scope` kept).
    A `#` starts a comment anywhere on a line; other lines are not looked at."""
    found = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1])
    return found


@dataclass(frozen=True, slots=True)
class ResolvConf:
    """One resolv.conf as read: its text ("" when it cannot be read) and its nameservers."""

    path: Path
    text: str
    nameservers: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> ResolvConf:
        text = read_text(path)
        return cls(path, text, tuple(nameserver_fields(text)))

    @property
    def asks_resolved_stub(self) -> bool:
        """Whether its first nameserver is systemd-resolved's stub listener."""
        return bool(self.nameservers) and self.nameservers[0] in RESOLVED_STUBS


def nameservers(path: Path, *, remote_only: bool) -> list[str]:
    """The nameservers of the resolv.conf at `path`, as written; [] when it cannot be read.
    `remote_only` keeps only those aidns could forward to: IP addresses that do not reach
    this host itself (see `is_this_host`)."""
    found = ResolvConf.read(path).nameservers
    if not remote_only:
        return list(found)
    return [text for text in found if parse_address(text) is not None and not is_this_host(text)]
