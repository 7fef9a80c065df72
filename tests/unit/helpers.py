"""Small builders shared by the unit tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dns.flags
import dns.message

from aidns.resolver.query import Query, Transport


def make_wire(
    name: str, rdtype: str = "A", *, edns: bool = False, dnssec: bool = False, cd: bool = False
) -> bytes:
    message = dns.message.make_query(
        name, rdtype, use_edns=0 if edns or dnssec else None, want_dnssec=dnssec
    )
    if cd:
        message.flags |= dns.flags.CD
    return message.to_wire()


def make_query(name: str, rdtype: str = "A", client: str = "127.0.0.1", **flags: bool) -> Query:
    return Query(make_wire(name, rdtype, **flags), (client, 40000), Transport.UDP, 0.0)


class FakeProc:
    """A /proc tree: pid directories with fd links, comm, cmdline, exe, stat and status."""

    def __init__(self, root: Path):
        self.root = root

    def add(
        self,
        pid: int,
        sockets: dict[int, int] | None = None,
        files: int = 3,
        uid: int | None = None,
        started: int = 0,
        thread_of: int | None = None,
    ) -> None:
        fd_dir = self.root / str(pid) / "fd"
        fd_dir.mkdir(parents=True)
        (self.root / str(pid) / "status").write_text(
            f"Name:\tproc{pid}\nUmask:\t0022\nState:\tS (sleeping)\n"
            f"Tgid:\t{thread_of or pid}\nNgid:\t0\nPid:\t{pid}\n"
        )
        (self.root / str(pid) / "stat").write_text(
            f"{pid} (proc {pid}) S 1 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 {started} 0 0\n"
        )
        for fd in range(files):
            (fd_dir / str(fd)).symlink_to("/dev/null")
        for fd, inode in (sockets or {}).items():
            self.link(pid, fd, inode)
        (self.root / str(pid) / "comm").write_text(f"proc{pid}\n")
        (self.root / str(pid) / "cmdline").write_bytes(f"/bin/proc{pid}\0--flag\0".encode())
        (self.root / str(pid) / "exe").symlink_to(f"/bin/proc{pid}")
        if uid is not None:
            os.chown(self.root / str(pid), uid, -1, follow_symlinks=False)

    def link(self, pid: int, fd: int, inode: int) -> None:
        path = self.root / str(pid) / "fd" / str(fd)
        path.unlink(missing_ok=True)
        path.symlink_to(f"socket:[{inode}]")

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid))

    def last_pid(self, pid: int) -> None:
        (self.root / "loadavg").write_text(f"0.10 0.20 0.30 1/123 {pid}\n")
