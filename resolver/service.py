"""Builds the running resolver from Settings and serves until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aidns.resolver.access import AccessStage
from aidns.resolver.attribution import AttributionStage
from aidns.resolver.blocking import BlockingStage
from aidns.resolver.caching import AnswerCache, CachingStage
from aidns.resolver.config import Settings, remember_upstreams
from aidns.resolver.errors import ConfigError
from aidns.resolver.forwarding import ForwardingStage
from aidns.resolver.lists import (
    DomainList,
    DomainMatcher,
    ListAction,
    Rule,
    load_lists,
    normalize_domain,
)
from aidns.resolver.pipeline import Pipeline, Stats, default_stages
from aidns.resolver.procinfo import (
    CATALOGUE_FILE,
    NullProcessLookup,
    default_catalogue,
    default_lookup,
)
from aidns.resolver.querylog import DB_NAME, QueryLog
from aidns.resolver.server import DnsServer
from aidns.resolver.upstream import UpstreamPool

log = logging.getLogger(__name__)


def config_rules(settings: Settings) -> list[DomainList]:
    """The `block:` and `allow:` names of the config file, as two small lists."""
    made = []
    for key, names, action in (
        ("block", settings.block, ListAction.BLOCK),
        ("allow", settings.allow, ListAction.ALLOW),
    ):
        domain_list = DomainList(
            name=f"config:{key}", action=action, source=str(settings.config_path)
        )
        for text in names:
            exact = text.startswith("=")
            try:
                domain = normalize_domain(text.lstrip("=")).decode()
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}", source=str(settings.config_path)) from None
            domain_list.rules.append(Rule(domain, action, domain_list.name, exact=exact))
        made.append(domain_list)
    return made


def build_matcher(settings: Settings) -> tuple[DomainMatcher, list[DomainList]]:
    """Every enabled list and the config's own rules; list problems are logged, never fatal."""
    lists, problems = load_lists(settings.list_dirs)
    for problem in problems:
        log.error("%s", problem)
    names = {domain_list.name for domain_list in lists}
    for wanted in (*settings.enabled_lists, *settings.disabled_lists):
        if wanted not in names:
            log.warning("lists: no list named %r (have: %s)", wanted, ", ".join(sorted(names)))
    for domain_list in lists:
        if domain_list.name in settings.disabled_lists:
            domain_list.enabled = False
        elif domain_list.name in settings.enabled_lists:
            domain_list.enabled = True
    lists.extend(config_rules(settings))
    return DomainMatcher(lists), lists


class Resolver:
    """The assembled pipeline and server; `run` serves until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.matcher, self.lists = build_matcher(settings)
        self.cache = AnswerCache(settings.cache)
        self.pool = UpstreamPool(
            settings.upstreams,
            timeout_s=settings.upstream_timeout_s,
            verify=str(settings.upstream_ca) if settings.upstream_ca else True,
        )
        self.stats = Stats()
        self.blocking = BlockingStage(self.matcher, settings.block_response)
        lookup = default_lookup() if settings.attribution else NullProcessLookup()
        tools = settings.data_dir / "lists" / CATALOGUE_FILE
        self.attribution = AttributionStage(
            lookup,
            default_catalogue([tools] if tools.exists() else []),
            budget_s=settings.attribution_budget_s,
        )
        stages, final = default_stages(
            access=AccessStage(settings.allow_nets),
            attribution=self.attribution,
            blocking=self.blocking,
            caching=CachingStage(self.cache),
            forwarding=ForwardingStage(self.pool, self.cache),
        )
        self.query_log = QueryLog(settings.data_dir / DB_NAME, settings.query_log)
        self.pipeline = Pipeline(stages, final, observers=[self.stats, self.query_log])
        self.server = DnsServer(self.pipeline, settings.listen, settings.tcp_idle_timeout_s)

    def describe_lists(self) -> str:
        enabled = [f"{d.name} ({len(d)})" for d in self.lists if d.enabled and len(d)]
        return f"lists: {', '.join(enabled) or 'none'}; {self.matcher.rule_count} rules"

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        for line in self.settings.describe():
            log.info("%s", line)
        log.info("%s", self.describe_lists())
        self.query_log.start()
        await self.server.start()
        remember_upstreams(self.settings)
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self.server.stop()
            await self.pool.aclose()
            await asyncio.to_thread(self.query_log.stop)
            log.info("stopped after %d queries", self.stats.queries)


def ensure_data_dir(data_dir: Path) -> None:
    try:
        (data_dir / "lists").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create data dir %s: %s; running without it", data_dir, exc.strerror)
