"""Where aidns listens and whom it asks: host:port parsing, listen addresses, upstream specs.

One `split_host_port` reads the host and port of both grammars:
- a listen address is an IP and a port from 0 (any free port) to 65535, default 53;
- an upstream is a scheme, an IP (or, for tls:// and https://, a host name), a port from 1
  to 65535 that defaults by scheme, and for https:// a path; `#name` gives the name its
  certificate must match.
`check_no_loop` refuses an upstream that is one of our own listen addresses.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from aidns.resolver.errors import ConfigError

LISTEN_PORT = 53

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def split_host_port(authority: str) -> tuple[str, str | None]:
    """`host`, `host:port`, `[IPv6]`, `[IPv6]:port` or a bare IPv6 -> (host, the port's text,
    or None when no colon gives one). ValueError on an unclosed bracket or text after it."""
    if authority.startswith("["):
        host, closed, after = authority[1:].partition("]")
        if not closed or (after and not after.startswith(":")):
            raise ValueError("unbalanced brackets")
        return host, after[1:] if after else None
    if authority.count(":") == 1:
        host, _, port_text = authority.partition(":")
        return host, port_text
    head, _, tail = authority.rpartition(":")
    if tail.isdigit() and is_ip(head):
        raise ValueError(
            f"{authority!r} may be an IPv6 address or {head} with port {tail}: write "
            f"[{head}]:{tail} for the port, or [{authority}] for the address"
        )
    return authority, None  # no port, or a bare IPv6 address


def is_ip(host: str) -> bool:
    """Whether `host` is an IP address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """`1.2.3.4`, `1.2.3.4:53`, `[::1]:53`, `::1` -> ListenAddress; ConfigError otherwise."""
    text = text.strip()
    try:
        try:
            host, port_text = split_host_port(text)
        except ValueError as exc:
            raise ValueError(
                str(exc) if "[" in str(exc) else f"{text!r}: expected [IPv6]:PORT"
            ) from None
        port = LISTEN_PORT
        if port_text:
            if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
                raise ValueError(f"{text!r}: port {port_text!r} is not a number from 0 to 65535")
            port = int(port_text)
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(
            f"listen: {exc} (give ADDR:PORT, e.g. 127.0.0.1:53 or [::1]:53)"
        ) from None
    return ListenAddress(str(address), port)


class Scheme(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    HTTPS = "https"


DEFAULT_PORTS = {Scheme.UDP: 53, Scheme.TCP: 53, Scheme.TLS: 853, Scheme.HTTPS: 443}


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """Where and how to ask; `str()` gives the canonical text that `parse_upstream` reads back."""

    scheme: Scheme
    host: str  # IP literal, or host name for tls/https
    port: int
    server_name: str | None = None  # name the certificate must match; for https, the URL host
    path: str = "/dns-query"  # https only

    @property
    def tls_name(self) -> str:
        return self.server_name or self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == DEFAULT_PORTS[self.scheme]
        authority = host if default else f"{host}:{self.port}"
        if self.scheme is Scheme.UDP:
            return self.host if default else authority
        path = self.path if self.scheme is Scheme.HTTPS else ""
        name = f"#{self.server_name}" if self.server_name not in (None, self.host) else ""
        return f"{self.scheme}://{authority}{path}{name}"


def parse_upstream(text: str) -> UpstreamSpec:
    """`IP`, `IP:PORT`, `[v6]:PORT` (UDP, TCP on truncation), `udp://`, `tcp://`,
    `tls://HOST[:PORT][#name]` or `https://HOST[:PORT][/path][#name]`; ConfigError otherwise."""
    scheme_text, has_scheme, rest = text.strip().partition("://")
    if not has_scheme:
        scheme_text, rest = "udp", text.strip()
    try:
        scheme = Scheme(scheme_text.lower())
    except ValueError:
        raise _bad(text, f"unknown scheme {scheme_text!r}; use udp, tcp, tls or https") from None
    rest, has_name, name = rest.partition("#")
    rest, slash, path = rest.partition("/")
    secure = scheme in (Scheme.TLS, Scheme.HTTPS)
    if slash and scheme is not Scheme.HTTPS:
        raise _bad(text, "only https:// upstreams take a path")
    if has_name and not secure:
        raise _bad(text, "only tls:// and https:// upstreams take a #server-name")
    host_text, port = _upstream_host_port(text, rest, DEFAULT_PORTS[scheme])
    host = _host(text, host_text, allow_names=secure)
    server_name = (_host(text, name, allow_names=True) if has_name else host) if secure else None
    return UpstreamSpec(scheme, host, port, server_name, f"/{path}" if path else "/dns-query")


def _bad(text: str, why: str) -> ConfigError:
    return ConfigError(f"bad upstream {text!r}: {why}")


def _upstream_host_port(text: str, authority: str, default_port: int) -> tuple[str, int]:
    try:
        host, port_text = split_host_port(authority)
    except ValueError as exc:
        if "[" in str(exc) and not authority.startswith("["):
            raise _bad(text, str(exc)) from None  # host:port or a bare IPv6?
        host, port_text = "", None
    if authority.startswith("[") and ":" not in host:  # unbalanced, or not an IPv6 inside
        raise _bad(text, "brackets hold an IPv6 address: [IPv6] or [IPv6]:PORT")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise _bad(text, f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _host(text: str, host: str, allow_names: bool) -> str:
    if not host:
        raise _bad(text, "no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not allow_names:
        raise _bad(
            text,
            f"{host!r} is not an IP address; plain, udp:// and tcp:// upstreams need one, "
            "because aidns is the resolver and has nothing to look names up with",
        )
    name = host.lower().removesuffix(".")
    if len(name) > 253 or not _HOST_NAME.fullmatch(name) or name.replace(".", "").isdigit():
        raise _bad(text, f"{host!r} is neither an IP address nor a host name")
    return name


def loops_to(spec: UpstreamSpec, listen: Sequence[ListenAddress]) -> ListenAddress | None:
    """The listen address of ours that asking `spec` would ask, if any."""
    try:
        target = ipaddress.ip_address(spec.host)
    except ValueError:
        return None
    for address in listen:
        ours = ipaddress.ip_address(address.host)
        same_host = ours == target or (ours.is_unspecified and target.version == ours.version)
        if same_host and address.port == spec.port and spec.port != 0:
            return address
    return None


def check_no_loop(upstreams: Sequence[UpstreamSpec], listen: Sequence[ListenAddress]) -> None:
    """Refuse an upstream that is one of our own listen addresses: we would ask ourselves."""
    for spec in upstreams:
        if (address := loops_to(spec, listen)) is not None:
            raise ConfigError(
                f"upstream {spec} is aidns's own listen address {address}: queries would loop. "
                "Give the real upstream with --upstream (see `aidns serve --help`)."
            )
