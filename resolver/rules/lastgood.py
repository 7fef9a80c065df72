"""The last good version of each list file, kept so that a list that can't be read keeps
blocking what it blocked.

Written by the compiler child only, beside the snapshot in `<data-dir>/lists.lastgood/`, one
file per list path: a JSON head (the list's metadata and small rules) and its hash arrays.
A copy is written only when the list file changed since the last one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from aidns.resolver.rules.lists import DomainList, ListAction, Rule

LAST_GOOD_DIR = "lists.lastgood"
_HEAD = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class KeptList:
    domain_list: DomainList
    when: str


def _stamp(path: Path) -> list[int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return [found.st_mtime_ns, found.st_size, found.st_ino]


class LastGood:
    """Last good versions of list files, by path, under `directory`."""

    def __init__(self, directory: Path, hash_check: int) -> None:
        self.directory = directory
        self.hash_check = hash_check  # copies made under another hash seed are useless

    def _file(self, list_path: Path) -> Path:
        digest = hashlib.sha256(str(list_path.absolute()).encode()).hexdigest()[:16]
        return self.directory / f"{list_path.name}.{digest}"

    def keep(self, list_path: Path, domain_list: DomainList) -> None:
        """Remember `domain_list` as the last good version of `list_path`; quietly not when
        the data dir can't be written."""
        target = self._file(list_path)
        stamp = _stamp(list_path)
        with contextlib.suppress(OSError, ValueError):
            with target.open("rb") as held:
                (length,) = _HEAD.unpack(held.read(_HEAD.size))
                head = json.loads(held.read(length))
            if head.get("stamp") == stamp and head.get("hash_check") == self.hash_check:
                return
        fields = {f.name: getattr(domain_list, f.name) for f in dataclasses.fields(DomainList)}
        fields["rules"] = [dataclasses.astuple(rule) for rule in domain_list.rules]
        subtree, exact = fields.pop("subtree_hashes"), fields.pop("exact_hashes")
        head_bytes = json.dumps(
            {
                "stamp": stamp,
                "hash_check": self.hash_check,
                "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                "list": fields,
                "counts": [len(subtree), len(exact)],
            }
        ).encode()
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{os.getpid()}")
            with temporary.open("wb") as out:
                out.write(_HEAD.pack(len(head_bytes)) + head_bytes)
                out.write(subtree.tobytes())
                out.write(exact.tobytes())
            os.replace(temporary, target)

    def fetch(self, list_path: Path) -> KeptList | None:
        """The last good version of `list_path`, or None."""
        try:
            with self._file(list_path).open("rb") as held:
                (length,) = _HEAD.unpack(held.read(_HEAD.size))
                head = json.loads(held.read(length))
                if head.get("hash_check") != self.hash_check:
                    return None
                subtree_count, exact_count = head["counts"]
                subtree: array[int] = array("q")
                subtree.fromfile(held, subtree_count)
                exact: array[int] = array("q")
                exact.fromfile(held, exact_count)
            fields = head["list"]
            rules = [Rule(*values) for values in fields.pop("rules")]
            domain_list = DomainList(**fields)
        except (OSError, ValueError, KeyError, TypeError, EOFError, struct.error):
            return None
        domain_list.action = ListAction(domain_list.action)
        domain_list.rules = [dataclasses.replace(r, action=ListAction(r.action)) for r in rules]
        domain_list.subtree_hashes = subtree
        domain_list.exact_hashes = exact
        return KeptList(domain_list, str(head.get("when", "before")))
