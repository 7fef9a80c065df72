"""The compiler child: reads the config, lists and rules, and writes a rule snapshot.

Run by the server as `python -m aidns.resolver.keeper.compile`, never on its serving path. A
hostile file can only make this process slow, big or dead: it runs at low priority, under an
address-space limit, and exits when done, handing its memory back. It prints one JSON line:
`{"ok": true, "problems": [...]}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from aidns.resolver.config import Settings, load_settings
from aidns.resolver.errors import AidnsError
from aidns.resolver.keeper.snapshots import input_stamps
from aidns.resolver.rules.lastgood import LAST_GOOD_DIR, LastGood
from aidns.resolver.rules.matcher import compile_snapshot, fingerprint
from aidns.resolver.rules.ruleset import build_rule_set, list_info
from aidns.resolver.rules.snapshot import write_snapshot

NICENESS = 10
QUIET_S = 0.3
LONGEST_WAIT_S = 10.0
MEMORY_LIMIT_BYTES = 4 << 30


def _lower_priority(memory_limit_bytes: int) -> None:
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))


def quiet_inputs(
    settings: Settings, quiet_s: float = QUIET_S, longest_wait_s: float = LONGEST_WAIT_S
) -> dict[str, Any]:
    """The input stamps, once no input has changed for `quiet_s`: a file still being written
    is read when it is done, not half-way (waiting `longest_wait_s` at most). Taken before
    reading, so a change made while reading shows as a stale snapshot."""
    deadline = time.monotonic() + longest_wait_s
    while True:
        inputs = input_stamps(settings)
        times = [stamp[0] / 1e9 for stamp in inputs.values() if isinstance(stamp, list)]
        age_s = time.time() - max(times, default=0.0)
        if age_s >= quiet_s or time.monotonic() >= deadline:
            return inputs
        time.sleep(min(quiet_s - age_s, max(deadline - time.monotonic(), 0.0)))


def compile_to(
    config: Path | None, data_dir: Path, out: Path, generation: int, quiet_s: float = QUIET_S
) -> dict[str, Any]:
    """Build the rule set the config describes and write its snapshot to `out`."""
    settings = load_settings(config_path=config, data_dir=data_dir, resolv_conf=())
    inputs = quiet_inputs(settings, quiet_s)
    last_good = LastGood(settings.data_dir / LAST_GOOD_DIR, fingerprint())
    rule_set = build_rule_set(settings, last_good)
    meta = {
        "inputs": inputs,
        "problems": rule_set.problems,
        "list_info": list_info(rule_set.lists),
        "process_rules": [
            {"name": r.name, "exact": r.exact, "processes": list(r.processes)}
            for r in rule_set.process_rules.rules
        ],
    }
    write_snapshot(out, compile_snapshot(rule_set.lists, generation, meta))
    return {"ok": True, "problems": rule_set.problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aidns-compile")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--generation", type=int, required=True)
    parser.add_argument("--memory-limit", type=int, default=MEMORY_LIMIT_BYTES)
    parser.add_argument("--quiet", type=float, default=QUIET_S, help="seconds to wait")
    args = parser.parse_args(argv)
    _lower_priority(args.memory_limit)
    try:
        result = compile_to(args.config, args.data_dir, args.out, args.generation, args.quiet)
    except AidnsError as exc:
        result = {"ok": False, "error": str(exc)}
    except MemoryError:
        limit_mib = args.memory_limit >> 20
        result = {"ok": False, "error": f"compiling the lists took more than {limit_mib} MiB"}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
