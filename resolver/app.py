"""Builds the running resolver from Settings and serves until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aidns.resolver.config import Settings, shipped_lists_dir
from aidns.resolver.datafiles import PAUSE_NAME, read_pause
from aidns.resolver.discovery import remember_upstreams
from aidns.resolver.errors import AidnsError
from aidns.resolver.faults import Faults
from aidns.resolver.keeper.logkeeper import LogKeeper
from aidns.resolver.keeper.snapshots import Compiled, SnapshotKeeper, vanished_shipped_lists
from aidns.resolver.memory import release_memory
from aidns.resolver.pipeline import Observer, Pipeline, default_stages, memo_entries
from aidns.resolver.procinfo.common import NullProcessLookup
from aidns.resolver.procinfo.lookup import default_lookup
from aidns.resolver.procinfo.tools import TOOLS_FILE, KnownTools, default_tools
from aidns.resolver.querylog.recorder import QueryRecorder
from aidns.resolver.querylog.schema import DB_NAME
from aidns.resolver.rules.active import ActiveRules, RuleHolder
from aidns.resolver.rules.reload import Reloader
from aidns.resolver.rules.ruleset import describe_lists
from aidns.resolver.rules.user import RULES_NAME, ProcessRules
from aidns.resolver.server import DnsServer
from aidns.resolver.stages.access import AccessStage
from aidns.resolver.stages.attribution import AttributionStage
from aidns.resolver.stages.blocking import BlockingStage
from aidns.resolver.stages.caching import AnswerCache, CachingStage
from aidns.resolver.stages.cnames import CnameInspection
from aidns.resolver.stages.forwarding import ForwardingStage, upstream_query_limit
from aidns.resolver.stages.processrules import ProcessRulesStage
from aidns.resolver.stages.special import SpecialNamesStage
from aidns.resolver.statusfile import StatusFile
from aidns.resolver.system.filewrites import FileWrites
from aidns.resolver.system.sdnotify import notify, watchdog_interval_s
from aidns.resolver.tcpclients import client_limit, open_files_limit
from aidns.resolver.upstream.following import SystemUpstreams
from aidns.resolver.upstream.pool import UpstreamPool

log = logging.getLogger(__name__)

REPEATS_FLUSH_S = 0.5  # counts of repeated questions reach the stats and the log this often
PAUSE_CHECK_S = 30.0  # a timed pause looks at the clock this often at most: suspends stop timers


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
        self.special = SpecialNamesStage(settings.protections)
        self.faults = Faults()
        lookup = default_lookup() if settings.attribution else NullProcessLookup()
        self.attribution = AttributionStage(
            lookup,
            self._load_tools(),
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
        if settings.protections.cname_inspection:
            self.forwarding.inspection = CnameInspection(self.holder)
        stages, final = default_stages(
            access=self.access,
            attribution=self.attribution,
            special=self.special,
            process_rules=self.process_rules,
            blocking=self.blocking,
            caching=CachingStage(self.cache),
            forwarding=self.forwarding,
        )
        self.recorder = QueryRecorder(settings.query_log.buffer_bytes)
        self.query_log: LogKeeper | None = None
        observers: list[Observer] = []
        if settings.query_log.enabled or settings.query_log.jsonl:
            self.query_log = LogKeeper(
                self.recorder, settings.data_dir / DB_NAME, settings.query_log
            )
            observers.append(self.recorder)
        self.pipeline = Pipeline(
            stages,
            final,
            observers=observers,
            faults=self.faults,
            same_socket=self.attribution.same_socket,
            settle=self.attribution.settle,
            max_entries=memo_entries(settings.cache.size),
        )
        self.stats = self.pipeline.stats
        self.server = DnsServer(self.pipeline, settings.listen, settings.tcp)
        self.started_at = time.time()
        self.reloaded_at: float | None = None
        self.system_upstreams = SystemUpstreams(
            self.pool,
            settings.data_dir,
            settings.listen,
            settings.follow_resolv_conf,
            told=lambda: self.status_file.changed(),
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.status_file = StatusFile(
            settings.data_dir,
            self.status,
            self.pipeline.activity.arm,
            also=release_memory,  # freed answers, memo entries and log records: back to the OS
        )
        # owned by the event loop; other threads reach them through _on_loop
        self._flush_timer: asyncio.TimerHandle | None = None
        self._pause_timer: asyncio.TimerHandle | None = None
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
            {i["name"]: i["block_ttl"] for i in compiled.list_info if "block_ttl" in i},
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
            self.status_file.write()
            return
        self._reload_done = covered
        vanished = vanished_shipped_lists(self.compiled.list_info, compiled.list_info)
        if vanished:
            self.errors = [
                f"the lists aidns ships are gone ({', '.join(vanished)}, from "
                f"{shipped_lists_dir()}): was aidns reinstalled or removed while it runs? The "
                "rules in effect stay; restart aidns"
            ]
            log.error("reload: %s", self.errors[0])
            self.status_file.write()
            return
        for problem in compiled.problems:
            log.error("%s", problem)
        if settings.listen != self.settings.listen:
            log.warning("listen changes take effect when aidns restarts")
        self.system_upstreams.files = settings.follow_resolv_conf
        self.pool.timeout_s = settings.upstream_timeout_s
        if not settings.follow_resolv_conf and settings.upstreams != self.pool.specs:
            self._use_upstreams(settings)
        self.access.allow_nets = settings.allow_nets
        self.attribution.tools = self._load_tools()
        self.special.use(settings.protections)
        self.forwarding.inspection = (
            CnameInspection(self.holder) if settings.protections.cname_inspection else None
        )
        paused_before = self.holder.rules.paused_until
        self.holder.put(self._active_rules(compiled, settings))
        self.compiled = compiled
        self.pipeline_forget()
        self._log_pause(paused_before, self.holder.rules.paused_until)
        self._on_loop(self._time_pause_end)
        self.system_upstreams.changed()
        self.errors = list(compiled.problems)
        self.reloaded_at = time.time()
        log.info("reloaded: %s", self.describe_lists())
        self.status_file.write()

    def _load_tools(self) -> KnownTools:
        """The shipped tool catalogue and the user's `<data-dir>/lists/tools.yaml`."""
        tools = default_tools([self.settings.data_dir / "lists" / TOOLS_FILE])
        for problem in tools.problems:
            log.error("%s", problem)
        return tools

    def _apply_pause(self) -> None:
        until = read_pause(self.settings.data_dir)
        before = self.holder.rules.paused_until
        if until != before:
            self.holder.replace(paused_until=until)
            self._log_pause(before, until)
            self._on_loop(self._time_pause_end)
            self.status_file.changed()
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
            "query_log": (
                self.query_log.counts() if self.query_log else {"written": 0, "dropped": 0}
            ),
            "attribution": self.attribution.counts(),
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

    def _on_loop(self, callback: Callable[[], object]) -> None:
        """From any thread: run `callback` on the event loop, if it runs."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(callback)

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
        if self.query_log is not None:
            self.query_log.start()
        self.pipeline.activity.wake = self.status_file.changed
        self.pipeline.repeats_started = lambda: self._on_loop(self._flush_repeats_soon)
        data_dir = self.settings.data_dir
        watched = [data_dir / RULES_NAME, data_dir / "lists.state.yaml"]
        config_path = self.settings.config_path
        if config_path is not None and (config_path.is_file() or not config_path.exists()):
            watched.append(config_path)  # not /dev/null: every write to it would be a change
        light: dict[Path, Callable[[], None]] = {data_dir / PAUSE_NAME: self._apply_pause}
        for path in self.system_upstreams.watched():
            light[path] = self.system_upstreams.changed
        reloader = Reloader(self.reload, watched, self.settings.list_dirs, light=light)
        followed = {path.resolve() for path in self.settings.follow_resolv_conf}
        written_in_place = FileWrites(followed)  # a bind mount's writes reach no folder's watch
        if written_in_place.fileno is not None:
            loop.add_reader(
                written_in_place.fileno, self.system_upstreams.written, written_in_place
            )
        reloader.start()  # before listening: a change right after start must not be missed
        await self.server.start()
        freeze_what_start_made()
        if self.settings.upstreams_from_system:
            remember_upstreams(self.settings.data_dir, self.settings.upstreams)
        self._time_pause_end()
        tasks = [
            asyncio.create_task(self.status_file.keep()),
            asyncio.create_task(self.system_upstreams.follow()),
        ]
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
            if written_in_place.fileno is not None:
                loop.remove_reader(written_in_place.fileno)
                written_in_place.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for timer in (self._flush_timer, self._pause_timer):
                if timer is not None:
                    timer.cancel()
            await self.server.stop()
            self.pipeline.flush_repeats(now=math.inf)
            await asyncio.to_thread(self.attribution.later.stop)
            await self.forwarding.aclose()
            await self.pool.aclose()
            if self.query_log is not None:
                await asyncio.to_thread(self.query_log.stop)
            self.status_file.write()
            log.info("stopped after %d queries", self.stats.queries)

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

    def _flush_repeats_soon(self) -> None:
        """On the loop: report repeated questions shortly, and again while some are kept."""
        if self._flush_timer is None and self._loop is not None:
            self._flush_timer = self._loop.call_later(REPEATS_FLUSH_S, self._flush_repeats)

    def _flush_repeats(self) -> None:
        self._flush_timer = None
        if self.pipeline.flush_repeats():
            self._flush_repeats_soon()

    def _time_pause_end(self) -> None:
        """On the loop: a timed pause ends by itself, dropping remembered answers when it does."""
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        until = self.holder.rules.paused_until
        if until is None or math.isinf(until) or self._loop is None:
            return
        left_s = until - time.time()
        if left_s <= 0:
            self._apply_pause()
            return
        self._pause_timer = self._loop.call_later(min(left_s, PAUSE_CHECK_S), self._time_pause_end)


def freeze_what_start_made() -> None:
    """Leave the objects made while starting (modules, the catalogue, the rules) out of every
    later garbage collection: a full collection then walks only what serving made, which cuts
    its pause, the longest stall a serving thread sees, from tens of milliseconds to a few."""
    gc.collect()
    gc.freeze()
