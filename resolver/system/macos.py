"""macOS's DNS settings: each network service's servers (networksetup) and scutil's resolvers."""

from __future__ import annotations

import re

from aidns.resolver.errors import AidnsError
from aidns.resolver.resolvconf import is_this_host, parse_address
from aidns.resolver.system.sysfiles import Machine

NO_SERVERS = "There aren't any DNS Servers set on"
# What makes macOS forget the answers it cached.
MACOS_FLUSH = (("dscacheutil", "-flushcache"), ("killall", "-HUP", "mDNSResponder"))

_SCUTIL_NAMESERVER = re.compile(r"^\s*nameserver\[\d+\]\s*:\s*(\S+)", re.MULTILINE)
_SCUTIL_DOMAIN = re.compile(r"^\s*domain\s*:", re.MULTILINE)


def macos_services(machine: Machine) -> list[str]:
    """Enabled network services, from `networksetup -listallnetworkservices`."""
    result = machine.runner(("networksetup", "-listallnetworkservices"))
    if not result.ok:
        raise AidnsError(f"networksetup -listallnetworkservices failed: {result.why()}")
    lines = result.stdout.splitlines()[1:]  # the first line explains the asterisk
    return [line for line in lines if line.strip() and not line.startswith("*")]


def macos_dns_servers(machine: Machine, service: str) -> list[str]:
    """The DNS servers set by hand on one network service."""
    result = machine.runner(("networksetup", "-getdnsservers", service))
    if not result.ok:
        raise AidnsError(f"networksetup -getdnsservers {service!r} failed: {result.why()}")
    if result.stdout.startswith(NO_SERVERS):
        return []
    lines = (line.strip() for line in result.stdout.splitlines())
    return [line for line in lines if parse_address(line) is not None]


def scutil_default_servers(text: str) -> list[str]:
    """The nameservers of `scutil --dns`'s first resolver without a domain: the default one."""
    for block in text.split("\n\n"):
        servers = _SCUTIL_NAMESERVER.findall(block)
        if servers and not _SCUTIL_DOMAIN.search(block):
            return list(servers)
    return []


def macos_default_servers(machine: Machine) -> list[str]:
    """The servers of `scutil --dns`'s default resolver, as the system asks them now."""
    return scutil_default_servers(machine.runner(("scutil", "--dns")).stdout)


def macos_system_servers(machine: Machine) -> list[str]:
    """The servers set by hand on a service, else those of `scutil --dns`'s default resolver
    (which DHCP fills); those on this host itself left out."""
    found: list[str] = []
    for service in macos_services(machine):
        found += [s for s in macos_dns_servers(machine, service) if not is_this_host(s)]
    if found:
        return list(dict.fromkeys(found))
    return [s for s in macos_default_servers(machine) if not is_this_host(s)]
