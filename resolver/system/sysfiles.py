"""System files and commands for the integration commands: exact snapshots, careful writes, runs."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import shlex
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidns.resolver.errors import AidnsError

# A file that is a mount point (Docker's /etc/hosts and /etc/resolv.conf, `ip netns exec`'s
# resolv.conf) cannot be renamed over; it is rewritten in place instead.
_IN_PLACE_ERRNOS = {errno.EBUSY, errno.EXDEV}


def under(root: Path, path: str | Path) -> Path:
    """`path` (absolute, as on a running system) inside the tree at `root`."""
    return root / str(path).lstrip("/")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replace_file(
    path: Path, data: bytes, *, follow_symlinks: bool = True, mode: int = 0o644
) -> str:
    """Write `data` to a sibling temporary file, flush it, and rename it over `path`, keeping
    the old file's mode and owner. A symlink is followed unless told not to; then the link
    itself is replaced. Returns how it was written: "renamed" or "in place"."""
    target = Path(os.path.realpath(path)) if follow_symlinks else path
    try:
        old = target.lstat()
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise AidnsError(f"cannot read {target}: {exc.strerror}") from None
    is_file = old is not None and stat.S_ISREG(old.st_mode)
    if is_file and is_mount_point(target):
        return _write_in_place(target, data)
    keep_mode = stat.S_IMODE(old.st_mode) if old is not None and is_file else mode
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.aidns.", dir=target.parent)
    except OSError as exc:
        if is_file and os.access(target, os.W_OK):
            return _write_in_place(target, data)
        raise AidnsError(f"cannot write {target}: {exc.strerror}; it is unchanged") from None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, keep_mode)
        if old is not None and is_file:
            with contextlib.suppress(PermissionError):
                os.chown(temporary, old.st_uid, old.st_gid)
        try:
            os.replace(temporary, target)
        except OSError as exc:
            if exc.errno not in _IN_PLACE_ERRNOS or not is_file:
                raise
            os.unlink(temporary)
            return _write_in_place(target, data)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise AidnsError(f"cannot write {target}: {exc.strerror}; it is unchanged") from None
    _sync_directory(target.parent)
    return "renamed"


def is_mount_point(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> bool:
    """Whether something is mounted on `path` itself, as a bind-mounted file often is."""
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return os.path.ismount(path)
    wanted = str(path)
    for line in text.splitlines():
        fields = line.split()
        # the mount point is field 5, with spaces and the like octal-escaped
        if len(fields) > 4 and _unescape(fields[4]) == wanted:
            return True
    return False


def _unescape(field: str) -> str:
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def _write_in_place(target: Path, data: bytes) -> str:
    try:
        with open(target, "r+b") as out:
            out.write(data)
            out.truncate()
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise AidnsError(f"cannot write {target}: {exc.strerror}") from None
    return "in place"


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@dataclass(frozen=True, slots=True)
class FileState:
    """What was at a path: a file (bytes, mode, owner), a symlink, a directory, or nothing."""

    path: str
    kind: str  # "file", "symlink", "dir", "absent"
    data: bytes = b""
    mode: int = 0o644
    uid: int = -1
    gid: int = -1
    target: str = ""

    @classmethod
    def of(cls, path: Path) -> FileState:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return cls(str(path), "absent")
        except OSError as exc:
            raise AidnsError(f"cannot read {path}: {exc.strerror}") from None
        mode, uid, gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
        if stat.S_ISLNK(info.st_mode):
            return cls(str(path), "symlink", mode=mode, uid=uid, gid=gid, target=os.readlink(path))
        if stat.S_ISDIR(info.st_mode):
            return cls(str(path), "dir", mode=mode, uid=uid, gid=gid)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AidnsError(f"cannot read {path}: {exc.strerror}") from None
        return cls(str(path), "file", data=data, mode=mode, uid=uid, gid=gid)

    def describe(self) -> str:
        return {
            "file": f"{len(self.data)} bytes",
            "symlink": f"a link to {self.target}",
            "dir": "a directory",
            "absent": "nothing",
        }[self.kind]

    def restore(self) -> None:
        """Put the path back exactly as it was; a directory is only removed when empty."""
        path = Path(self.path)
        now = FileState.of(path)
        if self.kind == "absent":
            if now.kind == "dir":
                with contextlib.suppress(OSError):
                    path.rmdir()
            elif now.kind != "absent":
                _unlink(path)
        elif self.kind == "dir":
            if now.kind != "dir":
                path.mkdir(mode=self.mode, parents=True, exist_ok=True)
        elif self.kind == "symlink":
            if now.kind == "symlink" and now.target == self.target:
                return
            if now.kind != "absent":
                _unlink(path)
            try:
                os.symlink(self.target, path)
            except OSError as exc:
                raise AidnsError(f"cannot restore {path}: {exc.strerror}") from None
        else:
            if now.kind == "symlink":
                _unlink(path)
            replace_file(path, self.data, follow_symlinks=False, mode=self.mode)
            with contextlib.suppress(OSError):
                os.chmod(path, self.mode)
                if self.uid >= 0:
                    os.chown(path, self.uid, self.gid)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "data": base64.b64encode(self.data).decode("ascii"),
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "target": self.target,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> FileState:
        return cls(
            path=str(value["path"]),
            kind=str(value["kind"]),
            data=base64.b64decode(str(value.get("data", ""))),
            mode=int(value.get("mode", 0o644)),
            uid=int(value.get("uid", -1)),
            gid=int(value.get("gid", -1)),
            target=str(value.get("target", "")),
        )


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        raise AidnsError(f"cannot remove {path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        text = (self.stderr or self.stdout).strip().splitlines()
        return text[-1] if text else f"exit status {self.returncode}"


Runner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str], timeout_s: float = 60.0) -> CommandResult:
    """Run a system command; a missing program is exit status 127, as in a shell."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        return CommandResult(tuple(argv), 127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(tuple(argv), 124, "", f"{argv[0]}: no result within {timeout_s:g} s")
    return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True, slots=True)
class Machine:
    """The system to look at and change: its file tree, its platform, how to run its commands.
    Commands that change a running system run only when the tree is the live one ("/")."""

    root: Path = Path("/")
    platform: str = sys.platform
    runner: Runner = run_command

    @property
    def live(self) -> bool:
        return self.root.resolve() == Path("/")

    def path(self, path: str) -> Path:
        return under(self.root, path)


def shell_line(argv: Sequence[str]) -> str:
    """A command as a person would type it."""
    return shlex.join(argv)
