from __future__ import annotations

import sys

from aidns.resolver.procinfo import macos as macos
from aidns.resolver.procinfo.common import NullProcessLookup, ProcessLookup
from aidns.resolver.procinfo.lookup import default_lookup


def test_default_lookup_fits_the_platform() -> None:
    lookup: ProcessLookup = default_lookup()
    if sys.platform.startswith("linux"):
        from aidns.resolver.procinfo.linux import LinuxProcessLookup

        assert isinstance(lookup, LinuxProcessLookup)
    elif sys.platform == "darwin":
        assert isinstance(lookup, macos.MacProcessLookup)
    else:
        assert isinstance(lookup, NullProcessLookup)
