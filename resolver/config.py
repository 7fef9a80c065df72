"""Settings from the config file, the environment and flags, in that order of weakness."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from aidns.resolver import yamlio
from aidns.resolver.endpoints import (
    ListenAddress,
    UpstreamSpec,
    check_no_loop,
    is_ip,
    loops_to,
    parse_listen,
    parse_upstream,
)
from aidns.resolver.errors import ConfigError
from aidns.resolver.querylog.writer import QueryLogConfig
from aidns.resolver.replies import BlockResponse
from aidns.resolver.stages.caching import CacheConfig

log = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1:53", "[::1]:53")
# Quad9: no logging of client addresses, DNSSEC-validating, reachable over DoT on 853.
FALLBACK_UPSTREAM = "tls://9.9.9.9#dns.quad9.net"
RESOLV_CONF_PATHS = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))
REMEMBERED_UPSTREAMS = "upstreams.remembered"
LOG_LEVELS = ("debug", "info", "warning", "error")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def default_config_path() -> Path:
    if _is_root():
        return Path("/etc/aidns/config.yaml")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aidns" / "config.yaml"


def default_data_dir() -> Path:
    if _is_root():
        return Path("/var/lib/aidns")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "aidns"


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
    tcp_idle_timeout_s: float
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

    def describe(self) -> list[str]:
        """One line per setting, in pipeline order, for the start-up log and `serve --check`."""
        return [
            f"config: {self.config_path or '(none)'}",
            f"data dir: {self.data_dir}",
            f"listen: {', '.join(map(str, self.listen))}",
            f"access: loopback{''.join(', ' + str(n) for n in self.allow_nets)}",
            f"blocking: block_response {self.block_response}, ttl {self.block_response.ttl_s} s; "
            f"lists from {', '.join(map(str, self.list_dirs))}",
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


KNOWN_KEYS = {
    "listen": "list of ADDR:PORT",
    "upstream": "list of upstream servers",
    "bootstrap": "list of DNS servers by IP that find upstreams given by name",
    "allow_net": "list of CIDRs",
    "block_response": "null | nxdomain | refused | <IPv4>,<IPv6>",
    "block_ttl": "seconds",
    "cache_size": "entries",
    "cache_max_ttl": "seconds",
    "cache_min_ttl": "seconds",
    "cache_serve_stale": "seconds an expired answer may still be served when no upstream answers",
    "upstream_timeout": "seconds",
    "upstream_ca": "path of a CA bundle for DoT and DoH upstreams",
    "tcp_idle_timeout": "seconds",
    "log_level": "debug | info | warning | error",
    "data_dir": "path",
    "block": "list of names to block",
    "allow": "list of names to allow",
    "lists": "mapping: enable / disable, each a list of list names",
    "attribution": "true | false",
    "attribution_budget_ms": "milliseconds",
    "query_log": "true | false",
    "query_log_days": "days",
    "query_log_rows": "rows",
    "query_log_jsonl": 'path, or "-" for standard output',
}


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed config file: its values and the line each key is on."""

    path: Path | None
    values: Mapping[str, Any]
    lines: Mapping[str, int]

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(
            f"{key}: {message}",
            source=str(self.path) if self.path else None,
            line=self.lines.get(key),
        )


def read_config_file(path: Path | None, required: bool) -> ConfigFile:
    if path is None or (not required and not path.exists()):
        return ConfigFile(None, {}, {})
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("config is not UTF-8 text", source=str(path)) from None
    try:
        node = yamlio.compose(text)
        values = yamlio.load(text)
    except yaml.YAMLError as exc:
        raise yamlio.error(exc, path) from None
    if values is None:
        return ConfigFile(path, {}, {})
    if not isinstance(values, dict) or not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            "the config must be a mapping of keys to values", source=str(path), line=1
        )
    lines = {str(key.value).replace("-", "_"): key.start_mark.line + 1 for key, _ in node.value}
    normalized = {str(key).replace("-", "_"): value for key, value in values.items()}
    config = ConfigFile(path, normalized, lines)
    for key in normalized:
        if key not in KNOWN_KEYS:
            raise config.error(key, f"unknown key; known keys: {', '.join(KNOWN_KEYS)}")
    return config


def _as_list(config: ConfigFile, key: str) -> list[str] | None:
    value = config.values.get(key)
    if value is None:
        return None
    if isinstance(value, str | int | float):
        return [str(value)]
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise config.error(key, f"expected {KNOWN_KEYS[key]}, got {value!r}")


def _as_number(
    config: ConfigFile, key: str, flag: float | None, default: float, minimum: float
) -> float:
    if flag is not None:
        value: Any = flag
    else:
        value = config.values.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise config.error(
            key, f"expected a number of {KNOWN_KEYS[key]} of at least {minimum:g}, got {value!r}"
        )
    return float(value)


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

    listen_texts = list(listen) or _as_list(config, "listen") or list(DEFAULT_LISTEN)
    try:
        listen_addresses = tuple(dict.fromkeys(parse_listen(text) for text in listen_texts))
    except ConfigError as exc:
        message = str(exc).removeprefix("listen: ")
        if listen:
            raise ConfigError(f"--listen: {message}") from None
        raise config.error("listen", message) from None

    nets: list[Network] = []
    for text in list(allow_net) or _as_list(config, "allow_net") or []:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            if allow_net:
                raise ConfigError(f"--allow-net: {exc}") from None
            raise config.error("allow_net", str(exc)) from None

    ttl = int(_as_number(config, "block_ttl", None, 60, 0))
    response_text = block_response or config.values.get("block_response") or "null"
    try:
        sinkhole = BlockResponse.parse(str(response_text), ttl_s=ttl)
    except ConfigError as exc:
        message = str(exc).removeprefix("block_response: ")
        if block_response:
            raise ConfigError(f"--block-response: {message}") from None
        raise config.error("block_response", message) from None

    cache = CacheConfig(
        size=int(_as_number(config, "cache_size", cache_size, 20000, 0)),
        max_ttl_s=int(_as_number(config, "cache_max_ttl", None, 86400, 0)),
        min_ttl_s=int(_as_number(config, "cache_min_ttl", None, 0, 0)),
        serve_stale_s=int(_as_number(config, "cache_serve_stale", None, 86400, 0)),
    )

    attribution = config.values.get("attribution", True)
    if not isinstance(attribution, bool):
        raise config.error("attribution", f"expected true or false, got {attribution!r}")
    log_enabled = config.values.get("query_log", True) if query_log is None else query_log
    if not isinstance(log_enabled, bool):
        raise config.error("query_log", f"expected true or false, got {log_enabled!r}")
    jsonl = query_log_jsonl or config.values.get("query_log_jsonl")
    query_log_config = QueryLogConfig(
        enabled=log_enabled,
        days=_as_number(config, "query_log_days", None, 7, 0.001),
        max_rows=int(_as_number(config, "query_log_rows", None, 1_000_000, 1)),
        jsonl=str(jsonl) if jsonl else None,
    )

    level = (log_level or str(config.values.get("log_level", "info"))).lower()
    if level not in LOG_LEVELS:
        message = f"{level!r} is not one of {', '.join(LOG_LEVELS)}"
        raise (
            ConfigError(f"--log-level: {message}")
            if log_level
            else config.error("log_level", message)
        )

    upstream_texts = list(upstream) or _as_list(config, "upstream")
    from_system = False
    if upstream_texts:
        source = "from flags" if upstream else f"from {where}"
        try:
            upstreams = tuple(parse_upstream(text) for text in upstream_texts)
        except ConfigError as exc:
            if upstream:
                raise ConfigError(f"--upstream: {exc}") from None
            raise config.error("upstream", str(exc)) from None
    else:
        upstreams, source, from_system = default_upstreams(data_dir, resolv_conf, listen_addresses)
    check_no_loop(upstreams, listen_addresses)
    bootstrap_specs, bootstrap_source = _bootstrap(config, bootstrap, upstreams, resolv_conf)
    check_no_loop(bootstrap_specs, listen_addresses)

    if upstream_ca is not None:
        if not upstream_ca.is_file():
            raise ConfigError(f"--upstream-ca: {upstream_ca} is not a readable file")
    elif config.values.get("upstream_ca") is not None:
        upstream_ca = Path(str(config.values["upstream_ca"])).expanduser()
        if not upstream_ca.is_file():
            raise config.error("upstream_ca", f"{upstream_ca} is not a readable file")

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
        allow_nets=tuple(nets),
        block_response=sinkhole,
        cache=cache,
        query_log=query_log_config,
        attribution=attribution,
        attribution_budget_s=_as_number(config, "attribution_budget_ms", None, 2.0, 0.1) / 1000,
        upstream_timeout_s=_as_number(config, "upstream_timeout", upstream_timeout_s, 2.0, 0.05),
        upstream_ca=upstream_ca,
        tcp_idle_timeout_s=_as_number(config, "tcp_idle_timeout", None, 10.0, 0.1),
        log_level=level,
        bootstrap=bootstrap_specs,
        bootstrap_source=bootstrap_source,
        data_dir=data_dir,
        config_path=config.path,
        block=tuple(_as_list(config, "block") or ()),
        allow=tuple(_as_list(config, "allow") or ()),
        disabled_lists=tuple(map(str, lists_config.get("disable") or ())),
        enabled_lists=tuple(map(str, lists_config.get("enable") or ())),
        list_dirs=(shipped_lists_dir(), data_dir / "lists"),
        follow_resolv_conf=() if upstream_texts else tuple(resolv_conf),
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
    texts = list(flags) or _as_list(config, "bootstrap")
    if texts:
        specs = []
        for text in texts:
            try:
                spec = parse_upstream(text)
                if not is_ip(spec.host):
                    raise ConfigError(f"{text!r} must be given by IP address: it finds the others")
            except ConfigError as exc:
                if flags:
                    raise ConfigError(f"--bootstrap: {exc}") from None
                raise config.error("bootstrap", str(exc)) from None
            specs.append(spec)
        return tuple(specs), "from flags" if flags else f"from {config.path}"
    by_ip = tuple(spec for spec in upstreams if is_ip(spec.host))
    if by_ip:
        return by_ip, "the upstreams given by IP"
    for path in resolv_conf:
        servers = nameservers_from(path)
        if servers:
            return tuple(parse_upstream(f"[{s}]" if ":" in s else s) for s in servers), (
                f"from {path}"
            )
    return (), "no nameserver by IP known"


def nameservers_from(resolv_conf: Path) -> list[str]:
    """The non-loopback `nameserver` lines of a resolv.conf; [] when unreadable."""
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    servers = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = ipaddress.ip_address(fields[1].split("%", 1)[0])
            except ValueError:
                continue
            if not address.is_loopback and not address.is_unspecified:
                servers.append(fields[1])
    return servers


def system_upstreams(
    resolv_conf: Sequence[Path], listen: Sequence[ListenAddress] = ()
) -> tuple[tuple[UpstreamSpec, ...], Path | None]:
    """The first resolv.conf's nameservers that are neither loopback nor aidns itself."""
    for path in resolv_conf:
        specs = tuple(parse_upstream(f"[{s}]" if ":" in s else s) for s in nameservers_from(path))
        specs = tuple(spec for spec in specs if not loops_to(spec, listen))
        if specs:
            return specs, path
    return (), None


def default_upstreams(
    data_dir: Path, resolv_conf: Sequence[Path], listen: Sequence[ListenAddress] = ()
) -> tuple[tuple[UpstreamSpec, ...], str, bool]:
    """(upstreams, where they came from, whether to remember them): the system's nameservers
    as they are now, so that aidns follows the networks a laptop joins; else the ones
    remembered from before the system pointed at aidns; else public DoT."""
    specs, path = system_upstreams(resolv_conf, listen)
    if specs:
        return specs, f"from {path}", True
    remembered = data_dir / REMEMBERED_UPSTREAMS
    try:
        texts = [line.strip() for line in remembered.read_text().splitlines() if line.strip()]
        if texts:
            return (
                tuple(parse_upstream(text) for text in texts),
                f"remembered in {remembered}",
                False,
            )
    except OSError:
        pass
    except ConfigError as exc:
        log.warning("ignoring %s: %s", remembered, exc)
    nowhere = ", ".join(map(str, resolv_conf))
    return (
        (parse_upstream(FALLBACK_UPSTREAM),),
        f"built-in default: no nameserver in {nowhere}",
        False,
    )


def remember_upstreams(data_dir: Path, upstreams: Sequence[UpstreamSpec]) -> None:
    """Keep the system's upstreams, so they survive the system later pointing at aidns."""
    remembered = data_dir / REMEMBERED_UPSTREAMS
    text = "".join(f"{spec}\n" for spec in upstreams)
    try:
        if remembered.read_text() == text:
            return
    except OSError:
        pass
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        remembered.write_text(text)
    except OSError as exc:
        log.warning("cannot remember upstreams in %s: %s", remembered, exc.strerror)
        return
    log.info("remembered upstreams %s in %s", ", ".join(map(str, upstreams)), remembered)
