"""Every config key in one place: what it takes, its default, and what it does.

The config file's checks, the starter config that `aidns install` writes, and the README's
table all come from this table (a test holds the README to it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigKey:
    takes: str  # as the errors say it: "expected a number of {takes}"
    default: str  # as YAML, or a sentence in parentheses where there is no value
    does: str


CONFIG_KEYS: dict[str, ConfigKey] = {
    "listen": ConfigKey(
        "list of ADDR:PORT", '[127.0.0.1:53, "[::1]:53"]', "where to answer, UDP and TCP"
    ),
    "upstream": ConfigKey(
        "list of upstream servers",
        "(the system's nameservers, remembered)",
        "IP[:PORT], udp://, tcp://, tls://HOST[:853][#name] or https://HOST/dns-query",
    ),
    "bootstrap": ConfigKey(
        "list of DNS servers by IP that find upstreams given by name",
        "(the upstreams given by IP, else the system's nameservers)",
        "DNS servers by IP that look up the upstreams given by name",
    ),
    "allow_net": ConfigKey("list of CIDRs", "[]", "networks besides loopback that may ask"),
    "block_response": ConfigKey(
        "null | nxdomain | refused | <IPv4>,<IPv6>", "null", "the answer to a blocked name"
    ),
    "block_ttl": ConfigKey("seconds", "60", "the TTL of that answer"),
    "cache_size": ConfigKey("entries", "20000", "answers kept; 0 turns the cache off"),
    "cache_max_ttl": ConfigKey(
        "seconds", "86400", "the longest TTL clients see and the cache keeps"
    ),
    "cache_min_ttl": ConfigKey("seconds", "0", "the shortest TTL clients see and the cache keeps"),
    "cache_serve_stale": ConfigKey(
        "seconds an expired answer may still be served when no upstream answers",
        "86400",
        "how long an expired answer may still be served when no upstream answers",
    ),
    "upstream_timeout": ConfigKey("seconds", "2", "how long to wait for the upstreams, in all"),
    "upstream_ca": ConfigKey(
        "path of a CA bundle for DoT and DoH upstreams",
        "(the system's CA bundle)",
        "the CA bundle that DoT and DoH upstreams' certificates are checked against",
    ),
    "tcp_idle_timeout": ConfigKey("seconds", "10", "a TCP client idle this long is closed"),
    "tcp_max_clients": ConfigKey("TCP connections", "100", "TCP clients at once"),
    "tcp_max_queued_bytes": ConfigKey(
        "bytes", "65536", "answers waiting for one TCP client before reading it pauses"
    ),
    "tcp_max_in_progress": ConfigKey(
        "queries", "16", "one TCP client's queries in progress before reading it pauses"
    ),
    "log_level": ConfigKey("debug | info | warning | error", "info", "what aidns's log says"),
    "data_dir": ConfigKey(
        "path",
        "(/var/lib/aidns as root, else ~/.local/share/aidns)",
        "rules, lists, the query log and state",
    ),
    "block": ConfigKey("list of names to block", "[]", "names blocked for everyone, and below"),
    "allow": ConfigKey("list of names to allow", "[]", "names that beat every list and block"),
    "lists": ConfigKey(
        "mapping: enable / disable, each a list of list names",
        "{enable: [], disable: []}",
        "lists on or off beyond their defaults (`aidns lists enable` beats this)",
    ),
    "firefox_canary": ConfigKey(
        "true | false",
        "true",
        "use-application-dns.net answers NXDOMAIN, so Firefox keeps to aidns, not its own DoH",
    ),
    "private_relay_canary": ConfigKey(
        "true | false",
        "true",
        "mask.icloud.com and mask-h2.icloud.com answer NXDOMAIN, so Safari keeps to aidns",
    ),
    "hide_resolver_discovery": ConfigKey(
        "true | false",
        "true",
        "resolver.arpa answers NODATA, so clients find no encrypted resolver around aidns",
    ),
    "extended_dns_errors": ConfigKey(
        "true | false",
        "true",
        "say why on aidns's own answers (RFC 8914): Blocked with the list, Stale Answer",
    ),
    "cname_inspection": ConfigKey(
        "true | false",
        "true",
        "a forwarded answer whose CNAME chain reaches a blocked name is sinkholed",
    ),
    "attribution": ConfigKey("true | false", "true", "find the program behind each query"),
    "attribution_budget_ms": ConfigKey(
        "milliseconds", "2", "the longest a query waits for its program to be found"
    ),
    "query_log": ConfigKey("true | false", "true", "log every query in SQLite"),
    "query_log_days": ConfigKey("days", "7", "how long rows are kept"),
    "query_log_rows": ConfigKey("rows", "1000000", "the most rows kept"),
    "query_log_jsonl": ConfigKey(
        'path, or "-" for standard output', "null", "also write every row as a JSON line"
    ),
    "query_log_buffer": ConfigKey(
        "bytes", "8388608", "records the server holds while the log writer catches up"
    ),
    "list_max_bytes": ConfigKey(
        "bytes a list file may hold", "268435456", "a bigger list file is refused"
    ),
    "list_max_entries": ConfigKey(
        "names a list file may hold", "5000000", "a list with more names is refused"
    ),
    "list_max_line_bytes": ConfigKey(
        "bytes a line of a list file may hold", "4096", "a list with a longer line is refused"
    ),
}

KNOWN_KEYS = {name: key.takes for name, key in CONFIG_KEYS.items()}


def starter_config(header: str) -> str:
    """A config file with every key commented out at its default, and what it does."""
    lines = [header.rstrip("\n"), ""]
    for name, key in CONFIG_KEYS.items():
        shown = f"# {name}: {key.default}" if not key.default.startswith("(") else f"# {name}:"
        note = key.default if key.default.startswith("(") else ""
        lines.append(f"{shown}  # {key.does}{' ' + note if note else ''}")
    return "\n".join(lines) + "\n"
