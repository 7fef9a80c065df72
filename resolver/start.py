"""Starting the server: the data dir, the hash seed, the open-files limit, and what
`serve --check` shows without starting anything."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from aidns.resolver.app import Resolver
from aidns.resolver.config import Settings
from aidns.resolver.rules.ruleset import build_rule_set, describe_lists, list_info
from aidns.resolver.system.hashseed import run_under_seed
from aidns.resolver.tcpclients import raise_open_files_limit

log = logging.getLogger(__name__)


def ensure_data_dir(data_dir: Path) -> None:
    try:
        (data_dir / "lists").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create data dir %s: %s; running without it", data_dir, exc.strerror)


def describe_serving(load_settings: Callable[[], Settings]) -> list[str]:
    """What `serve --check` shows: the effective settings, then the lists in effect. Binds,
    starts and writes nothing."""
    settings = _loaded(load_settings)
    rule_set = build_rule_set(settings)
    return [
        *settings.describe(),
        describe_lists(list_info(rule_set.lists), rule_set.matcher.rule_count),
    ]


def serve_until_stopped(load_settings: Callable[[], Settings]) -> None:
    """Serve until SIGINT or SIGTERM; `load_settings` is read again on every reload."""
    settings = _loaded(load_settings)
    ensure_data_dir(settings.data_dir)
    run_under_seed(settings.data_dir)
    raise_open_files_limit()
    asyncio.run(Resolver(settings, reload_settings=load_settings).run())


def _loaded(load_settings: Callable[[], Settings]) -> Settings:
    settings = load_settings()
    logging.getLogger().setLevel(settings.log_level.upper())
    return settings
