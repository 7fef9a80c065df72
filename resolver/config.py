"""Settings from the config file, the environment and flags, in that order of weakness.

Config owns its types: Settings and the frozen config of each part (CacheConfig,
QueryLogConfig, TcpConfig; ListenAddress and UpstreamSpec from endpoints) are defined here or below,
and the stages, the server and the query log receive them.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aidns.resolver.configfile import (
    ConfigFile,
    default_config_path,
    default_data_dir,
    read_config_file,
)
from aidns.resolver.discovery import default_upstreams
from aidns.resolver.endpoints import (
    ListenAddress,
    UpstreamSpec,
    check_no_loop,
    is_ip,
    parse_listen,
    parse_upstream,
)
from aidns.resolver.errors import ConfigError
from aidns.resolver.replies import BlockResponse
from aidns.resolver.resolvconf import RESOLV_CONF_PATHS, nameservers

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1:53", "[::1]:53")
# Quad9: no logging of client addresses, DNSSEC-validating, reachable over DoT on 853.
LOG_LEVELS = ("debug", "info", "warning", "error")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def resolve_data_dir(config_path: Path | None, data_dir: Path | None) -> Path:
    """The data dir for a command: the flag, else the config's `data_dir`, else the default."""
    if data_dir is not None:
        return data_dir
    config = read_config_file(
        config_path or default_config_path(), required=config_path is not None
    )
    configured = config.values.get("data_dir")
    return Path(str(configured)).expanduser() if configured else default_data_dir()


def shipped_lists_dir() -> Path:
    return Path(str(resources.files("aidns.blocklists")))


@dataclass(frozen=True, slots=True)
class CacheConfig:
    size: int = 20000
    max_ttl_s: int = 86400
    min_ttl_s: int = 0
    serve_stale_s: int = 86400
    extended_errors: bool = True  # a stale answer says so (RFC 8914) to an EDNS client

    def describe(self) -> str:
        stale = f"; stale up to {self.serve_stale_s} s" if self.serve_stale_s else ""
        return (
            f"cache: {self.size} entries, TTLs kept between {self.min_ttl_s} and "
            f"{self.max_ttl_s} s{stale}"
        )


@dataclass(frozen=True, slots=True)
class QueryLogConfig:
    enabled: bool = True
    days: float = 7.0
    max_rows: int = 1_000_000
    jsonl: str | None = None
    window_entries: int = 20_000
    batch_interval_s: float = 1.0
    busy_timeout_s: float = 1.0
    buffer_bytes: int = 8 << 20  # records the server holds for the keeper

    def describe(self) -> str:
        if not self.enabled:
            return "querylog: off"
        mirror = f", JSON lines to {self.jsonl}" if self.jsonl else ""
        return f"querylog: keep {self.days:g} days, at most {self.max_rows} rows{mirror}"


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # the server's and its children's


@dataclass(frozen=True, slots=True)
class Protections:
    """What aidns answers itself so that clients keep using it, and how it says why."""

    firefox_canary: bool = True  # use-application-dns.net: NXDOMAIN keeps Firefox off its DoH
    private_relay_canary: bool = True  # mask(-h2).icloud.com: NXDOMAIN keeps Safari on aidns
    resolver_discovery: bool = True  # resolver.arpa: NODATA hides encrypted resolvers (DDR)
    extended_errors: bool = True  # RFC 8914 codes on aidns's own answers, to EDNS clients
    cname_inspection: bool = True  # an answer whose CNAME chain reaches a blocked name

    def describe(self) -> str:
        named = {
            "Firefox DoH canary": self.firefox_canary,
            "iCloud Private Relay canaries": self.private_relay_canary,
            "resolver.arpa": self.resolver_discovery,
            "extended DNS errors": self.extended_errors,
            "CNAME inspection": self.cname_inspection,
        }
        on = [name for name, is_on in named.items() if is_on]
        return f"protections: {', '.join(on) or 'none'}"


LIST_MAX_BYTES = 256 << 20
LIST_MAX_ENTRIES = 5_000_000
LIST_MAX_LINE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ListLimits:
    """How much one list file may hold. A file over any limit is refused whole, with a message
    naming the file and the limit, and its last good version stays in use."""

    max_bytes: int = LIST_MAX_BYTES
    max_entries: int = LIST_MAX_ENTRIES
    max_line_bytes: int = LIST_MAX_LINE_BYTES


@dataclass(frozen=True, slots=True)
class TcpConfig:
    """Bounds on local TCP clients, so none can take descriptors or memory without limit."""

    idle_timeout_s: float = 10.0
    # A machine's own programs hold few TCP connections (glibc opens one per truncated
    # answer); dnsmasq caps its TCP children at 20. 100 leaves room for clients that keep
    # connections open, yet stays far below a service's usual 1024 open files.
    max_clients: int = 100
    max_queued_bytes: int = 65536  # unsent answers per client before it is no longer read
    max_in_progress: int = 16  # queries per client waiting on an upstream

    def describe(self) -> str:
        return (
            f"tcp: at most {self.max_clients} clients, each read no further while "
            f"{self.max_queued_bytes} bytes of answers wait to be sent or "
            f"{self.max_in_progress} queries are in progress, dropped after "
            f"{self.idle_timeout_s:g} s idle or stalled"
        )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `serve` needs, resolved and checked."""

    listen: tuple[ListenAddress, ...]
    upstreams: tuple[UpstreamSpec, ...]
    upstream_source: str
    upstreams_from_system: bool
    allow_nets: tuple[Network, ...]
    block_response: BlockResponse
    cache: CacheConfig
    query_log: QueryLogConfig
    attribution: bool
    attribution_budget_s: float
    upstream_timeout_s: float
    upstream_ca: Path | None
    tcp: TcpConfig
    log_level: str
    bootstrap: tuple[UpstreamSpec, ...]
    bootstrap_source: str
    data_dir: Path
    config_path: Path | None
    block: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    disabled_lists: tuple[str, ...] = ()
    enabled_lists: tuple[str, ...] = ()
    list_dirs: tuple[Path, ...] = field(default=())
    follow_resolv_conf: tuple[Path, ...] = ()  # no upstream configured: follow these files
    list_limits: ListLimits = field(default_factory=ListLimits)
    protections: Protections = field(default_factory=Protections)

    def describe(self) -> list[str]:
        """One line per setting, in pipeline order, for the start-up log and `serve --check`."""
        return [
            f"config: {self.config_path or '(none)'}",
            f"data dir: {self.data_dir}",
            f"listen: {', '.join(map(str, self.listen))}",
            self.tcp.describe(),
            f"access: loopback{''.join(', ' + str(n) for n in self.allow_nets)}",
            f"blocking: block_response {self.block_response}, ttl {self.block_response.ttl_s} s; "
            f"lists from {', '.join(map(str, self.list_dirs))}",
            self.protections.describe(),
            self.cache.describe(),
            self.query_log.describe(),
            f"attribution: {'on' if self.attribution else 'off'}, "
            f"budget {self.attribution_budget_s * 1000:g} ms",
            f"forwarding: {', '.join(map(str, self.upstreams))} ({self.upstream_source}"
            + (", following the system's nameservers" if self.follow_resolv_conf else "")
            + f"), timeout {self.upstream_timeout_s:g} s"
            + (f", CA {self.upstream_ca}" if self.upstream_ca else ""),
            *(
                [
                    f"bootstrap: {', '.join(map(str, self.bootstrap)) or 'the system'} "
                    f"({self.bootstrap_source})"
                ]
                if any(not is_ip(spec.host) for spec in self.upstreams)
                else []
            ),
        ]

    def warnings(self) -> list[str]:
        """What works now but may fail later, for the start-up log."""
        named = [str(spec) for spec in self.upstreams if not is_ip(spec.host)]
        if named and not self.bootstrap:
            return [
                f"{', '.join(named)}: found through the system's own lookup, which loops once "
                "the system resolves through aidns; give the address (tls://IP#name) or a "
                "`bootstrap` server"
            ]
        return []


def load_settings(
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    listen: Sequence[str] = (),
    upstream: Sequence[str] = (),
    bootstrap: Sequence[str] = (),
    allow_net: Sequence[str] = (),
    block_response: str | None = None,
    cache_size: int | None = None,
    upstream_timeout_s: float | None = None,
    upstream_ca: Path | None = None,
    log_level: str | None = None,
    query_log: bool | None = None,
    query_log_jsonl: str | None = None,
    resolv_conf: Sequence[Path] = RESOLV_CONF_PATHS,
) -> Settings:
    """Merge flags over the config file over defaults; every error names its source."""
    explicit = config_path is not None
    config = read_config_file(config_path or default_config_path(), required=explicit)
    where = f"{config.path}" if config.path else "flags"

    if data_dir is None:
        configured = config.values.get("data_dir")
        data_dir = Path(str(configured)).expanduser() if configured else default_data_dir()

    listen_texts = list(listen) or config.texts("listen") or list(DEFAULT_LISTEN)
    listen_addresses = config.checked(
        "listen", bool(listen), lambda: tuple(dict.fromkeys(map(parse_listen, listen_texts)))
    )
    net_texts = list(allow_net) or config.texts("allow_net") or []
    nets = config.checked("allow_net", bool(allow_net), lambda: tuple(map(_network, net_texts)))

    ttl = int(config.number("block_ttl", None, 60, 0))
    response_text = str(block_response or config.values.get("block_response") or "null")
    extended_errors = config.switch("extended_dns_errors", None, True)
    sinkhole = config.checked(
        "block_response",
        bool(block_response),
        lambda: BlockResponse.parse(
            response_text,
            ttl_s=ttl,
            extended_errors=extended_errors,
        ),
    )
    cache = _cache_config(config, cache_size)
    attribution = config.switch("attribution", None, True)
    query_log_config = _query_log_config(config, query_log, query_log_jsonl)

    level = (log_level or str(config.values.get("log_level", "info"))).lower()
    if level not in LOG_LEVELS:
        message = f"{level!r} is not one of {', '.join(LOG_LEVELS)}"
        raise config.blame("log_level", bool(log_level), message)

    upstream_texts = list(upstream) or config.texts("upstream") or []
    from_system = False
    if upstream_texts:
        source = "from flags" if upstream else f"from {where}"
        upstreams = config.checked(
            "upstream", bool(upstream), lambda: tuple(map(parse_upstream, upstream_texts))
        )
    else:
        upstreams, source, from_system = default_upstreams(data_dir, resolv_conf, listen_addresses)
    check_no_loop(upstreams, listen_addresses)
    bootstrap_specs, bootstrap_source = _bootstrap(config, bootstrap, upstreams, resolv_conf)
    check_no_loop(bootstrap_specs, listen_addresses)

    ca_bundle = _ca_bundle(config, upstream_ca)
    lists_config = config.values.get("lists") or {}
    if not isinstance(lists_config, dict) or set(lists_config) - {"enable", "disable"}:
        raise config.error(
            "lists", "expected a mapping with `enable` and/or `disable` lists of list names"
        )

    return Settings(
        listen=listen_addresses,
        upstreams=upstreams,
        upstream_source=source,
        upstreams_from_system=from_system,
        allow_nets=nets,
        block_response=sinkhole,
        cache=cache,
        query_log=query_log_config,
        attribution=attribution,
        attribution_budget_s=config.number("attribution_budget_ms", None, 2.0, 0.1) / 1000,
        upstream_timeout_s=config.number("upstream_timeout", upstream_timeout_s, 2.0, 0.05),
        upstream_ca=ca_bundle,
        tcp=_tcp_config(config),
        log_level=level,
        bootstrap=bootstrap_specs,
        bootstrap_source=bootstrap_source,
        data_dir=data_dir,
        config_path=config.path,
        block=tuple(config.texts("block") or ()),
        allow=tuple(config.texts("allow") or ()),
        disabled_lists=tuple(map(str, lists_config.get("disable") or ())),
        enabled_lists=tuple(map(str, lists_config.get("enable") or ())),
        list_dirs=(shipped_lists_dir(), data_dir / "lists"),
        follow_resolv_conf=() if upstream_texts else tuple(resolv_conf),
        protections=Protections(
            firefox_canary=config.switch("firefox_canary", None, True),
            private_relay_canary=config.switch("private_relay_canary", None, True),
            resolver_discovery=config.switch("hide_resolver_discovery", None, True),
            extended_errors=config.switch("extended_dns_errors", None, True),
            cname_inspection=config.switch("cname_inspection", None, True),
        ),
        list_limits=ListLimits(
            max_bytes=int(config.number("list_max_bytes", None, LIST_MAX_BYTES, 1024)),
            max_entries=int(config.number("list_max_entries", None, LIST_MAX_ENTRIES, 1)),
            max_line_bytes=int(
                config.number("list_max_line_bytes", None, LIST_MAX_LINE_BYTES, 256)
            ),
        ),
    )


def _ca_bundle(config: ConfigFile, flag: Path | None) -> Path | None:
    configured = config.values.get("upstream_ca")
    path = Path(str(configured)).expanduser() if flag is None and configured is not None else flag
    if path is not None and not path.is_file():
        raise config.blame("upstream_ca", flag is not None, f"{path} is not a readable file")
    return path


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _cache_config(config: ConfigFile, size: int | None) -> CacheConfig:
    return CacheConfig(
        size=int(config.number("cache_size", size, 20000, 0)),
        max_ttl_s=int(config.number("cache_max_ttl", None, 86400, 0)),
        min_ttl_s=int(config.number("cache_min_ttl", None, 0, 0)),
        serve_stale_s=int(config.number("cache_serve_stale", None, 86400, 0)),
        extended_errors=config.switch("extended_dns_errors", None, True),
    )


def _tcp_config(config: ConfigFile) -> TcpConfig:
    default = TcpConfig()
    return TcpConfig(
        idle_timeout_s=config.number("tcp_idle_timeout", None, default.idle_timeout_s, 0.1),
        max_clients=int(config.number("tcp_max_clients", None, default.max_clients, 1)),
        max_queued_bytes=int(
            config.number("tcp_max_queued_bytes", None, default.max_queued_bytes, 1024)
        ),
        max_in_progress=int(config.number("tcp_max_in_progress", None, default.max_in_progress, 1)),
    )


def _query_log_config(
    config: ConfigFile, enabled_flag: bool | None, jsonl_flag: str | None
) -> QueryLogConfig:
    enabled = config.switch("query_log", enabled_flag, True)
    jsonl = jsonl_flag or config.values.get("query_log_jsonl")
    return QueryLogConfig(
        enabled=enabled,
        days=config.number("query_log_days", None, 7, 0.001),
        max_rows=int(config.number("query_log_rows", None, 1_000_000, 1)),
        jsonl=str(jsonl) if jsonl else None,
        buffer_bytes=int(config.number("query_log_buffer", None, 8 << 20, 65536)),
    )


def _bootstrap(
    config: ConfigFile,
    flags: Sequence[str],
    upstreams: Sequence[UpstreamSpec],
    resolv_conf: Sequence[Path],
) -> tuple[tuple[UpstreamSpec, ...], str]:
    """The servers that find upstreams given by name, and where they came from: the flags,
    the config, else the upstreams given by IP, else the system's nameservers; () means
    the system's own lookup."""
    texts = list(flags) or config.texts("bootstrap")
    if texts:
        specs = config.checked("bootstrap", bool(flags), lambda: tuple(map(_by_ip, texts)))
        return specs, "from flags" if flags else f"from {config.path}"
    by_ip = tuple(spec for spec in upstreams if is_ip(spec.host))
    if by_ip:
        return by_ip, "the upstreams given by IP"
    for path in resolv_conf:
        servers = nameservers(path, remote_only=True)
        if servers:
            return tuple(parse_upstream(f"[{s}]" if ":" in s else s) for s in servers), (
                f"from {path}"
            )
    return (), "no nameserver by IP known"


def _by_ip(text: str) -> UpstreamSpec:
    spec = parse_upstream(text)
    if not is_ip(spec.host):
        raise ConfigError(f"{text!r} must be given by IP address: it finds the others")
    return spec
