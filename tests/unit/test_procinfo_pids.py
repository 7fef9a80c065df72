from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("Linux attribution", allow_module_level=True)

from aidns.resolver.procinfo.pids import PidFinder

from .helpers import FakeProc

# --- which process: a fake /proc ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def proc(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


FOREVER = float("inf")


def forget_matches(finder: PidFinder) -> None:
    """Drop what earlier searches learnt about sockets, so the next one searches again."""
    finder._recent.clear()
    finder._sockets.clear()


def test_new_processes_are_searched_first_newest_first(proc: FakeProc) -> None:
    for pid in (100, 200, 300):
        proc.add(pid)
    clock = Clock()
    finder = PidFinder(proc.root, clock)
    proc.add(400)
    proc.add(350, sockets={3: 9001})
    proc.add(500)
    assert finder.find(9001, None, FOREVER).pid == 350
    assert finder.scanned == [500, 400, 350]


def test_old_processes_are_searched_newest_first(proc: FakeProc) -> None:
    for pid in (100, 200, 300):
        proc.add(pid)
    proc.add(150, sockets={3: 9001})
    finder = PidFinder(proc.root, Clock())
    assert finder.find(9001, None, FOREVER).pid == 150
    assert finder.scanned == [300, 200, 150]


def test_new_means_first_seen_in_the_last_two_seconds(proc: FakeProc) -> None:
    proc.add(100, sockets={3: 9001})
    clock = Clock()
    finder = PidFinder(proc.root, clock)
    proc.add(50)  # a recycled low pid, but new
    proc.add(60)
    finder.find(1, None, FOREVER)  # sees 50 and 60 for the first time
    forget_matches(finder)
    clock.now += 1.0
    assert finder.find(9001, None, FOREVER).pid == 100
    assert finder.scanned == [60, 50, 100]
    clock.now += 1.5
    forget_matches(finder)
    assert finder.find(9001, None, FOREVER).pid == 100
    assert finder.scanned == [100]  # 50 and 60 are old now; pid order


@pytest.mark.skipif(os.geteuid() != 0, reason="giving fake processes other uids needs root")
def test_processes_of_the_sockets_uid_come_before_the_rest(proc: FakeProc) -> None:
    proc.add(100, sockets={3: 9001}, uid=1000)
    proc.add(200, uid=1000)
    proc.add(300, uid=0)
    proc.add(400, uid=0)
    finder = PidFinder(proc.root, Clock())
    assert finder.find(9001, 1000, FOREVER).pid == 100
    assert finder.scanned == [200, 100]


def test_a_known_socket_and_recent_processes_are_checked_without_a_scan(proc: FakeProc) -> None:
    proc.add(100)
    proc.add(200, sockets={5: 9001})
    proc.add(300, sockets={4: 9002})
    finder = PidFinder(proc.root, Clock())
    assert finder.find(9001, None, FOREVER).pid == 200
    assert finder.scanned == [300, 200]
    # 9002 was read on the way to 9001: found straight away
    assert finder.find(9002, None, FOREVER).pid == 300
    assert finder.scanned == []
    # a long-lived client's new socket usually gets the same fd number again
    proc.link(200, 5, 9003)
    assert finder.find(9003, None, FOREVER).pid == 200
    assert finder.scanned == []


def test_a_client_alternating_between_two_fds_is_found_without_a_scan(proc: FakeProc) -> None:
    proc.add(100, sockets={5: 9001})
    proc.add(200)
    finder = PidFinder(proc.root, Clock())
    assert finder.find(9001, None, FOREVER).pid == 100
    proc.link(100, 6, 9002)  # the next socket is opened before the last one is closed
    assert finder.find(9002, None, FOREVER).pid == 100
    for inode, fd in ((9003, 5), (9004, 6), (9005, 5)):
        proc.link(100, fd, inode)
        assert finder.find(inode, None, FOREVER).pid == 100
        assert finder.scanned == []


def test_recently_matched_processes_are_scanned_before_old_ones(proc: FakeProc) -> None:
    for pid in (100, 200, 300, 400):
        proc.add(pid)
    proc.link(100, 3, 9001)
    finder = PidFinder(proc.root, Clock())
    assert finder.find(9001, None, FOREVER).pid == 100
    proc.link(100, 7, 9002)  # another fd number this time
    assert finder.find(9002, None, FOREVER).pid == 100
    assert finder.scanned == [100]


def test_only_sixteen_recent_processes_are_kept(proc: FakeProc) -> None:
    for pid in range(100, 120):
        proc.add(pid, sockets={3: 9000 + pid})
    finder = PidFinder(proc.root, Clock())
    for pid in range(100, 120):
        assert finder.find(9000 + pid, None, FOREVER).pid == pid
    assert list(finder._recent) == list(range(104, 120))


def test_fds_opened_since_the_last_look_are_read_first(
    proc: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc.add(100, files=40)
    finder = PidFinder(proc.root, Clock())
    finder.find(1, None, FOREVER)
    proc.link(100, 40, 9001)
    read: list[str] = []
    real_readlink = os.readlink

    def readlink(path: str, *, dir_fd: int | None = None) -> str:
        read.append(path)
        return real_readlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "readlink", readlink)
    assert finder.find(9001, None, FOREVER).pid == 100
    assert read == ["40"]


def test_a_process_that_vanishes_mid_search_is_skipped_and_forgotten(
    proc: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pid in (100, 200, 300):
        proc.add(pid)
    proc.link(100, 3, 9001)
    finder = PidFinder(proc.root, Clock())
    finder.find(1, None, FOREVER)
    forget_matches(finder)
    real_listdir = os.listdir

    def listdir(path: str | int) -> list[str]:
        names = real_listdir(path)
        if path == str(proc.root):
            proc.remove(300)  # exits between the listing and the scan
        return names

    monkeypatch.setattr(os, "listdir", listdir)
    assert finder.find(9001, None, FOREVER).pid == 100
    assert finder.scanned == [300, 200, 100]
    assert 300 not in finder._first_seen and 300 not in finder._fd_names


def test_unreadable_processes_are_skipped_and_reported(
    proc: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    for pid in (100, 200, 300):
        proc.add(pid)
    finder = PidFinder(proc.root, Clock())
    real_open = os.open

    def guarded_open(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if path.endswith("/300/fd"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    search = finder.find(9001, None, FOREVER)
    assert search.pid is None and search.denied and not search.out_of_time
    proc.link(200, 3, 9001)
    assert finder.find(9001, None, FOREVER).pid == 200


def test_the_search_stops_at_the_deadline(proc: FakeProc) -> None:
    for pid in range(100, 110):
        proc.add(pid, files=4)
    proc.link(100, 3, 9001)
    clock = Clock()
    finder = PidFinder(proc.root, clock)
    clock.step = 1.0  # every look at the clock costs a second
    search = finder.find(9001, None, clock.now + 4.5)
    assert search.pid is None and search.out_of_time
    assert 0 < len(finder.scanned) < 10 and 100 not in finder.scanned
    clock.step = 0.0
    assert finder.find(9001, None, clock.now + 1).pid == 100


def test_newest_means_latest_start_not_highest_pid(proc: FakeProc) -> None:
    proc.add(30000, started=100)
    proc.add(20000, started=150)
    proc.add(500, started=200, sockets={3: 9001})  # started after pids wrapped
    proc.add(400, started=190)
    finder = PidFinder(proc.root, Clock())
    assert finder.find(9001, None, FOREVER).pid == 500
    assert finder.scanned == [500]
    forget_matches(finder)
    assert finder.find(1, None, FOREVER).pid is None
    assert finder.scanned == [500, 400, 20000, 30000]


def test_new_processes_come_from_the_last_pid_without_listing_proc(proc: FakeProc) -> None:
    for pid in (100, 200):
        proc.add(pid)
    proc.last_pid(200)
    finder = PidFinder(proc.root, Clock())
    assert finder.listings == 1
    proc.add(201)
    proc.add(202, thread_of=100)  # a thread of an old process: not a new one
    proc.add(203, sockets={3: 9001})
    proc.last_pid(203)
    assert finder.find(9001, None, FOREVER).pid == 203
    assert finder.scanned == [203] and finder.listings == 1
    proc.add(204, sockets={3: 9002})
    proc.last_pid(204)
    assert finder.find(9002, None, FOREVER).pid == 204
    assert finder.scanned == [204] and finder.listings == 1


def test_proc_is_listed_when_the_likely_ones_miss_or_too_many_pids_went_by(
    proc: FakeProc,
) -> None:
    proc.add(100, sockets={3: 9001})
    proc.last_pid(100)
    finder = PidFinder(proc.root, Clock(), max_probe=8)
    proc.add(101)
    proc.last_pid(101)
    assert finder.find(9001, None, FOREVER).pid == 100  # 101 is new but does not hold it
    assert finder.scanned == [101, 100] and finder.listings == 2
    proc.add(150, sockets={3: 9002})
    proc.last_pid(150)  # 49 pids since the last look: list /proc instead of probing
    assert finder.find(9002, None, FOREVER).pid == 150
    assert finder.scanned == [150] and finder.listings == 3
