"""Builds the running resolver from Settings and serves until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aidns.resolver.config import Settings
from aidns.resolver.datafiles import PAUSE_NAME, read_pause, write_status
from aidns.resolver.discovery import default_upstreams, remember_upstreams
from aidns.resolver.errors import AidnsError
from aidns.resolver.faults import Faults
from aidns.resolver.keeper.snapshots import Compiled, SnapshotKeeper
from aidns.resolver.pipeline import Observer, Pipeline, default_stages, memo_entries
from aidns.resolver.procinfo.common import NullProcessLookup
from aidns.resolver.procinfo.lookup import default_lookup
from aidns.resolver.procinfo.tools import TOOLS_FILE, default_tools
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.querylog.writer import QueryLog
from aidns.resolver.rules.active import ActiveRules, RuleHolder
from aidns.resolver.rules.reload import Reloader
from aidns.resolver.rules.ruleset import build_rule_set, list_info
from aidns.resolver.rules.user import RULES_NAME, ProcessRules
from aidns.resolver.server import DnsServer
from aidns.resolver.stages.access import AccessStage
from aidns.resolver.stages.attribution import AttributionStage
from aidns.resolver.stages.blocking import BlockingStage
from aidns.resolver.stages.caching import AnswerCache, CachingStage
from aidns.resolver.stages.forwarding import ForwardingStage, upstream_query_limit
from aidns.resolver.stages.processrules import ProcessRulesStage
from aidns.resolver.system.hashseed import run_under_seed
from aidns.resolver.system.sdnotify import notify, watchdog_interval_s
from aidns.resolver.tcpclients import client_limit, open_files_limit, raise_open_files_limit
from aidns.resolver.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)


class Resolver:
    """The assembled pipeline and server; `run` serves until stopped, reloading on changes."""

    def __init__(self, settings: Settings, reload_settings: Callable[[], Settings] | None = None):
        self.settings = settings
        self.reload_settings = reload_settings or (lambda: settings)
        self.keeper = SnapshotKeeper(settings)
        last = self.keeper.last()
        if last is not None and self.keeper.current(last):
            log.info("rules from the last snapshot (generation %d)", last.generation)
            self.compiled = last
        else:
            self.compiled = self.keeper.compile(wait_for_quiet=False)
        for problem in self.compiled.problems:
            log.error("%s", problem)
        self.errors: list[str] = list(self.compiled.problems)
        self.holder = RuleHolder(self._active_rules(self.compiled, settings))
        self._reload_lock = threading.Lock()  # guards the two counters below
        self._reload_lock_serial = threading.Lock()  # one reload at a time
        self._reload_asked = 0
        self._reload_done = 0
        self.cache = AnswerCache(settings.cache)
        self.pool = UpstreamPool(
            settings.upstreams,
            timeout_s=settings.upstream_timeout_s,
            verify=str(settings.upstream_ca) if settings.upstream_ca else True,
            bootstrap=settings.bootstrap,
        )
        self.access = AccessStage(settings.allow_nets)
        self.blocking = BlockingStage(self.holder)
        self.process_rules = ProcessRulesStage(self.holder)
        self.faults = Faults()
        lookup = default_lookup() if settings.attribution else NullProcessLookup()
        tools = settings.data_dir / "lists" / TOOLS_FILE
        self.attribution = AttributionStage(
            lookup,
            default_tools([tools] if tools.exists() else []),
            budget_s=settings.attribution_budget_s,
            faults=self.faults,
        )
        tcp_clients = client_limit(settings.tcp.max_clients, open_files_limit())
        self.forwarding = ForwardingStage(
            self.pool,
            self.cache,
            self.faults,
            max_in_flight=upstream_query_limit(open_files_limit(), tcp_clients),
        )
        stages, final = default_stages(
            access=self.access,
            attribution=self.attribution,
            process_rules=self.process_rules,
            blocking=self.blocking,
            caching=CachingStage(self.cache),
            forwarding=self.forwarding,
        )
        self.query_log = QueryLog(settings.data_dir / DB_NAME, settings.query_log)
        observers: list[Observer] = []
        if settings.query_log.enabled or settings.query_log.jsonl:
            observers.append(self.query_log)
        self.pipeline = Pipeline(
            stages,
            final,
            observers=observers,
            faults=self.faults,
            max_entries=memo_entries(settings.cache.size),
        )
        self.stats = self.pipeline.stats
        self.server = DnsServer(self.pipeline, settings.listen, settings.tcp)
        self.started_at = time.time()
        self.reloaded_at: float | None = None
        self.follow_resolv_conf = settings.follow_resolv_conf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._apply_pause()

    def describe_lists(self) -> str:
        return describe_lists(self.compiled.list_info, self.compiled.matcher.rule_count)

    @staticmethod
    def _active_rules(compiled: Compiled, settings: Settings) -> ActiveRules:
        return ActiveRules(
            compiled.matcher,
            ProcessRules(compiled.process_rules),
            settings.block_response,
            read_pause(settings.data_dir),
        )

    def reload(self) -> None:
        """Compile the files anew in the keeper's child and swap the result in whole. Reloads
        run one at a time; one asked for while another runs is covered by the next."""
        with self._reload_lock:
            self._reload_asked += 1
            asked = self._reload_asked
        with self._reload_lock_serial:
            if self._reload_done >= asked:
                return  # a reload that started after this was asked has read the files
            with self._reload_lock:
                covered = self._reload_asked
            self._reload(covered)

    def _reload(self, covered: int) -> None:
        try:
            settings = self.reload_settings()
            compiled = self.keeper.compile()
        except AidnsError as exc:
            self._reload_done = covered
            self.errors = [str(exc)]
            log.error("reload: %s; the previous rules stay in effect", exc)
            self._write_status()
            return
        self._reload_done = covered
        for problem in compiled.problems:
            log.error("%s", problem)
        if settings.listen != self.settings.listen:
            log.warning("listen changes take effect when aidns restarts")
        self.follow_resolv_conf = settings.follow_resolv_conf
        self.pool.timeout_s = settings.upstream_timeout_s
        if not settings.follow_resolv_conf and settings.upstreams != self.pool.specs:
            self._use_upstreams(settings)
        self.access.allow_nets = settings.allow_nets
        paused_before = self.holder.rules.paused_until
        self.holder.put(self._active_rules(compiled, settings))
        self.compiled = compiled
        self.pipeline_forget()
        self._log_pause(paused_before, self.holder.rules.paused_until)
        self.errors = list(compiled.problems)
        self.reloaded_at = time.time()
        log.info("reloaded: %s", self.describe_lists())
        self._write_status()

    def _apply_pause(self) -> None:
        until = read_pause(self.settings.data_dir)
        before = self.holder.rules.paused_until
        if until != before:
            self.holder.replace(paused_until=until)
            self._log_pause(before, until)
        self.pipeline_forget()

    @staticmethod
    def _log_pause(before: float | None, until: float | None) -> None:
        if until != before:
            log.info("blocking %s", "resumed" if until is None else f"paused until {until:.0f}")

    def pipeline_forget(self) -> None:
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.forget()

    def status(self) -> dict[str, Any]:
        by_action = {str(action): count for action, count in self.stats.by_action.items()}
        return {
            "pid": os.getpid(),
            "started": self.started_at,
            "reloaded": self.reloaded_at,
            "updated": time.time(),
            "listen": [f"{t} {a}" for t, a in self.server.bound],
            "upstreams": [str(spec) for spec in self.pool.specs],
            "queries": self.stats.queries,
            "by_verdict": by_action,
            "paused_until": self.holder.rules.paused_until,
            "lists": self.compiled.list_info,
            "rules": self.compiled.matcher.rule_count,
            "rules_generation": self.compiled.generation,
            "errors": self.errors,
            "faults": self.faults.counts(),
            "forwarding": {
                "in_flight": self.forwarding.in_flight,
                "max_in_flight": self.forwarding.max_in_flight,
                "shared": self.forwarding.shared,
            },
            "tcp": self.server.tcp_clients.status(),
            "query_log": self.query_log.counts(),
            "cache": {
                "entries": len(self.cache),
                "stale_answers": self.cache.stale_hits,
                "prefetches": self.cache.prefetches,
            },
            "upstream_health": [
                {
                    "upstream": str(upstream.spec),
                    "rtt_ms": None if upstream.rtt_s is None else round(upstream.rtt_s * 1000, 1),
                    "failures_in_a_row": upstream.failures,
                }
                for upstream in self.pool.upstreams
            ],
        }

    def _write_status(self) -> None:
        write_status(self.settings.data_dir, self.status())

    async def _keep_status(self, every_s: float = 2.0) -> None:
        while True:
            await asyncio.to_thread(self._write_status)
            await asyncio.sleep(every_s)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.faults.loop_error)
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, self.reload))
        for line in self.settings.describe():
            log.info("%s", line)
        for warning in self.settings.warnings():
            log.warning("%s", warning)
        log.info("%s", self.describe_lists())
        self.query_log.start()
        data_dir = self.settings.data_dir
        watched = [data_dir / RULES_NAME, data_dir / "lists.state.yaml"]
        config_path = self.settings.config_path
        if config_path is not None and (config_path.is_file() or not config_path.exists()):
            watched.append(config_path)  # not /dev/null: every write to it would be a change
        reloader = Reloader(
            self.reload,
            watched,
            self.settings.list_dirs,
            light={data_dir / PAUSE_NAME: self._apply_pause},
        )
        reloader.start()  # before listening: a change right after start must not be missed
        await self.server.start()
        if self.settings.upstreams_from_system:
            remember_upstreams(self.settings.data_dir, self.settings.upstreams)
        tasks = [
            asyncio.create_task(self._keep_status()),
            asyncio.create_task(self._expire_pause()),
            asyncio.create_task(self._flush_repeats()),
        ]
        tasks.append(asyncio.create_task(self._follow_system_upstreams()))
        bound = sorted({str(address) for _transport, address in self.server.bound})
        notify(f"READY=1\nSTATUS=answering on {', '.join(bound)}")
        every_s = watchdog_interval_s()
        if every_s is not None:
            tasks.append(asyncio.create_task(self._ping_watchdog(every_s)))
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            notify("STOPPING=1")
            reloader.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.server.stop()
            self.pipeline.flush_repeats(now=math.inf)
            await self.forwarding.aclose()
            await self.pool.aclose()
            await asyncio.to_thread(self.query_log.stop)
            self._write_status()
            log.info("stopped after %d queries", self.stats.queries)

    async def _follow_system_upstreams(self, every_s: float = 2.0) -> None:
        """With no upstream configured, ask what the system's resolv.conf names now: a laptop
        that joins another network gets that network's nameservers within seconds."""
        settings = self.settings
        while True:
            await asyncio.sleep(every_s)
            if not self.follow_resolv_conf:
                continue
            specs, source, from_system = default_upstreams(
                settings.data_dir, self.follow_resolv_conf, settings.listen
            )
            if specs == self.pool.specs:
                continue
            await self.pool.replace(specs)
            log.info("upstreams now %s (%s)", ", ".join(map(str, specs)), source)
            if from_system:
                remember_upstreams(settings.data_dir, specs)

    def _use_upstreams(self, settings: Settings) -> None:
        """From a reload's thread: the event loop swaps them in."""
        if self._loop is None or self._loop.is_closed():
            return
        replacing = self.pool.replace(settings.upstreams, settings.bootstrap)
        try:
            asyncio.run_coroutine_threadsafe(replacing, self._loop).result(timeout=10)
        except Exception as exc:
            log.error("reload: could not switch upstreams: %s", exc)
            return
        upstreams = ", ".join(map(str, settings.upstreams))
        log.info("upstreams now %s (%s)", upstreams, settings.upstream_source)

    async def _ping_watchdog(self, every_s: float) -> None:
        """Pings only while the event loop runs and every listener is alive."""
        while True:
            if self.server.healthy():
                notify("WATCHDOG=1")
            else:
                log.error("a UDP listener has stopped; no longer telling the watchdog all is well")
            await asyncio.sleep(every_s)

    async def _flush_repeats(self, every_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.pipeline.flush_repeats()

    async def _expire_pause(self) -> None:
        """A timed pause ends by itself: drop remembered answers when it does."""
        while True:
            await asyncio.sleep(0.5)
            until = self.holder.rules.paused_until
            if until is not None and time.time() >= until:
                self._apply_pause()


def ensure_data_dir(data_dir: Path) -> None:
    try:
        (data_dir / "lists").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create data dir %s: %s; running without it", data_dir, exc.strerror)


def describe_lists(list_info: list[dict[str, Any]], rule_count: int) -> str:
    enabled = [f"{d['name']} ({d['entries']})" for d in list_info if d["enabled"] and d["entries"]]
    return f"lists: {', '.join(enabled) or 'none'}; {rule_count} rules"


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
