"""Which upstreams to use when none is configured: the system's nameservers as they are
now, else the ones remembered from before the system pointed at aidns, else public DoT."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from aidns.resolver.datafiles import write_atomic
from aidns.resolver.endpoints import ListenAddress, UpstreamSpec, loops_to, parse_upstream
from aidns.resolver.errors import AidnsError, ConfigError
from aidns.resolver.resolvconf import nameservers

log = logging.getLogger(__name__)

FALLBACK_UPSTREAM = "tls://9.9.9.9#dns.quad9.net"
REMEMBERED_UPSTREAMS = "upstreams.remembered"


def system_upstreams(
    resolv_conf: Sequence[Path], listen: Sequence[ListenAddress] = ()
) -> tuple[tuple[UpstreamSpec, ...], Path | None]:
    """The first resolv.conf's nameservers that are neither loopback nor aidns itself."""
    for path in resolv_conf:
        found = nameservers(path, remote_only=True)
        specs = tuple(parse_upstream(f"[{s}]" if ":" in s else s) for s in found)
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
        write_atomic(remembered, text)
    except (OSError, AidnsError) as exc:
        log.warning("cannot remember upstreams in %s: %s", remembered, exc)
        return
    log.info("remembered upstreams %s in %s", ", ".join(map(str, upstreams)), remembered)
