"""The process lookup for this platform: Linux, macOS, or a null one that knows nothing."""

from __future__ import annotations

import logging
import sys

from aidns.resolver.procinfo.common import NullProcessLookup, ProcessLookup

log = logging.getLogger(__name__)


def default_lookup() -> ProcessLookup:
    """The Linux lookup on Linux, libproc/lsof on macOS, a null one elsewhere or on failure."""
    try:
        if sys.platform.startswith("linux"):
            from aidns.resolver.procinfo.linux import LinuxProcessLookup

            return LinuxProcessLookup()
        if sys.platform == "darwin":
            from aidns.resolver.procinfo.macos import MacProcessLookup

            return MacProcessLookup()
    except OSError as exc:
        log.warning("process attribution is off: %s", exc)
    return NullProcessLookup()
