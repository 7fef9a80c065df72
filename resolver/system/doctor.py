"""`aidns doctor`: checks that the system resolves through aidns, one line each with a fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aidns.resolver.config import load_settings
from aidns.resolver.errors import AidnsError
from aidns.resolver.resolvconf import RESOLV_CONF, RESOLVED_UPLINKS
from aidns.resolver.system.checks import Check, Status
from aidns.resolver.system.routing import check_listen, check_relay, check_system_dns
from aidns.resolver.system.serving import (
    check_attribution,
    check_lists,
    check_query_log,
    check_server_errors,
    check_upstreams,
)
from aidns.resolver.system.sysfiles import Machine


def run_doctor(
    machine: Machine,
    *,
    config_path: Path | None = None,
    data_dir: Path | None = None,
    listen: Sequence[str] = (),
    upstream: Sequence[str] = (),
    proc_root: Path = Path("/proc"),
) -> list[Check]:
    """Every check, in the order a query meets the things they check."""
    try:
        settings = load_settings(
            config_path=config_path,
            data_dir=data_dir,
            listen=listen,
            upstream=upstream,
            resolv_conf=(machine.path(RESOLV_CONF), machine.path(RESOLVED_UPLINKS)),
        )
    except AidnsError as exc:
        return [Check(Status.FAIL, "config", str(exc), "fix the file or flag it names")]
    checks = [
        Check(
            Status.OK,
            "config",
            f"{settings.config_path or 'no config file (defaults)'}; data dir {settings.data_dir}",
        )
    ]
    listening, servers = check_listen(settings, machine, proc_root)
    checks += listening
    checks.append(check_system_dns(settings, machine))
    checks += check_relay(settings, machine, proc_root)
    checks += check_upstreams(settings, machine, proc_root)
    checks += check_lists(settings)
    checks += check_server_errors(settings)
    checks.append(check_query_log(settings))
    checks.append(check_attribution(settings, servers, machine, proc_root))
    return checks
