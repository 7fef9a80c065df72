"""What one doctor check found: its status, topic, message and fix, as one line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

SETUP_FIX = "sudo aidns setup-dns (or, without a server, sudo aidns hosts apply)"
DIRECT_FIX = "sudo aidns setup-dns --mode systemd-resolved --direct (see the README)"


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    status: Status
    topic: str
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.topic}: {self.message}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


def healthy(checks: Sequence[Check]) -> bool:
    return not any(check.status is Status.FAIL for check in checks)
