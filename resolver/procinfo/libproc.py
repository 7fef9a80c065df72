"""macOS: sockets and processes from libproc.dylib through ctypes (<sys/proc_info.h>)."""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
from dataclasses import dataclass
from typing import Protocol

from aidns.resolver.procinfo.common import CMDLINE_READ_BYTES, trim_cmdline, user_name
from aidns.resolver.query import ProcessInfo

# <sys/proc_info.h>
PROC_ALL_PIDS = 1
PROC_PIDLISTFDS = 1
PROC_PIDTBSDINFO = 3
PROC_PIDFDSOCKETINFO = 3
PROX_FDTYPE_SOCKET = 2
SOCKINFO_IN = 1
SOCKINFO_TCP = 2
PROC_PIDPATHINFO_MAXSIZE = 4 * 1024
MAXCOMLEN = 16
# <sys/sysctl.h>
CTL_KERN = 1
KERN_PROCARGS2 = 49

_u8, _u16, _i16 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_int16
_u32, _i32, _u64, _i64 = ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64, ctypes.c_int64


class ProcFdInfo(ctypes.Structure):
    _fields_ = [("proc_fd", _i32), ("proc_fdtype", _u32)]


class ProcFileInfo(ctypes.Structure):
    _fields_ = [
        ("fi_openflags", _u32),
        ("fi_status", _u32),
        ("fi_offset", _i64),
        ("fi_type", _i32),
        ("fi_guardflags", _u32),
    ]


class VinfoStat(ctypes.Structure):
    _fields_ = [
        ("vst_dev", _u32),
        ("vst_mode", _u16),
        ("vst_nlink", _u16),
        ("vst_ino", _u64),
        ("vst_uid", _u32),
        ("vst_gid", _u32),
        ("vst_times", _i64 * 8),  # atime, mtime, ctime, birthtime, each with nanoseconds
        ("vst_size", _i64),
        ("vst_blocks", _i64),
        ("vst_blksize", _i32),
        ("vst_flags", _u32),
        ("vst_gen", _u32),
        ("vst_rdev", _u32),
        ("vst_qspare", _i64 * 2),
    ]


class SockbufInfo(ctypes.Structure):
    _fields_ = [
        ("sbi_cc", _u32),
        ("sbi_hiwat", _u32),
        ("sbi_mbcnt", _u32),
        ("sbi_mbmax", _u32),
        ("sbi_lowat", _u32),
        ("sbi_flags", _i16),
        ("sbi_timeo", _i16),
    ]


class In4In6Addr(ctypes.Structure):
    _fields_ = [("i46a_pad32", _u32 * 3), ("i46a_addr4", _u8 * 4)]


class InAddrUnion(ctypes.Union):
    _fields_ = [("ina_46", In4In6Addr), ("ina_6", _u8 * 16)]


class InSockInfoV4(ctypes.Structure):
    _fields_ = [("in4_tos", _u8)]


class InSockInfoV6(ctypes.Structure):
    _fields_ = [("in6_hlim", _u8), ("in6_cksum", _i32), ("in6_ifindex", _u16), ("in6_hops", _i16)]


class InSockInfo(ctypes.Structure):
    _fields_ = [
        ("insi_fport", _i32),  # network byte order in the low 16 bits
        ("insi_lport", _i32),
        ("insi_gencnt", _u64),
        ("insi_flags", _u32),
        ("insi_flow", _u32),
        ("insi_vflag", _u8),
        ("insi_ip_ttl", _u8),
        ("rfu_1", _u32),
        ("insi_faddr", InAddrUnion),
        ("insi_laddr", InAddrUnion),
        ("insi_v4", InSockInfoV4),
        ("insi_v6", InSockInfoV6),
    ]


class TcpSockInfo(ctypes.Structure):
    _fields_ = [
        ("tcpsi_ini", InSockInfo),
        ("tcpsi_state", _i32),
        ("tcpsi_timer", _i32 * 4),
        ("tcpsi_mss", _i32),
        ("tcpsi_flags", _u32),
        ("rfu_1", _u32),
        ("tcpsi_tp", _u64),
    ]


class SocketProto(ctypes.Union):
    # un_sockinfo (two 8-byte handles, two 255-byte addresses) is the largest member: 528 bytes
    _fields_ = [("pri_in", InSockInfo), ("pri_tcp", TcpSockInfo), ("pri_un", _u64 * 66)]


class SocketInfo(ctypes.Structure):
    _fields_ = [
        ("soi_stat", VinfoStat),
        ("soi_so", _u64),
        ("soi_pcb", _u64),
        ("soi_type", _i32),
        ("soi_protocol", _i32),
        ("soi_family", _i32),
        ("soi_options", _i16),
        ("soi_linger", _i16),
        ("soi_state", _i16),
        ("soi_qlen", _i16),
        ("soi_incqlen", _i16),
        ("soi_qlimit", _i16),
        ("soi_timeo", _i16),
        ("soi_error", _u16),
        ("soi_oobmark", _u32),
        ("soi_rcv", SockbufInfo),
        ("soi_snd", SockbufInfo),
        ("soi_kind", _i32),
        ("rfu_1", _u32),
        ("soi_proto", SocketProto),
    ]


class SocketFdInfo(ctypes.Structure):
    _fields_ = [("pfi", ProcFileInfo), ("psi", SocketInfo)]


class ProcBsdInfo(ctypes.Structure):
    _fields_ = [
        ("pbi_flags", _u32),
        ("pbi_status", _u32),
        ("pbi_xstatus", _u32),
        ("pbi_pid", _u32),
        ("pbi_ppid", _u32),
        ("pbi_uid", _u32),
        ("pbi_gid", _u32),
        ("pbi_ruid", _u32),
        ("pbi_rgid", _u32),
        ("pbi_svuid", _u32),
        ("pbi_svgid", _u32),
        ("rfu_1", _u32),
        ("pbi_comm", ctypes.c_char * MAXCOMLEN),
        ("pbi_name", ctypes.c_char * (2 * MAXCOMLEN)),
        ("pbi_nfiles", _u32),
        ("pbi_pgid", _u32),
        ("pbi_pjobc", _u32),
        ("e_tdev", _u32),
        ("e_tpgid", _u32),
        ("pbi_nice", _i32),
        ("pbi_start_tvsec", _u64),
        ("pbi_start_tvusec", _u64),
    ]


@dataclass(frozen=True, slots=True)
class InetSocket:
    """The parts of a socket_fdinfo that identify an Internet socket."""

    protocol: int  # IPPROTO_UDP or IPPROTO_TCP
    family: int
    local_ip: bytes  # 4 or 16 bytes
    local_port: int
    remote_ip: bytes
    remote_port: int
    uid: int


def decode_socket_fdinfo(info: SocketFdInfo) -> InetSocket | None:
    """An IPv4/IPv6 UDP or TCP socket's ends and owner; None for any other socket."""
    psi = info.psi
    if psi.soi_kind == SOCKINFO_TCP:
        ini = psi.soi_proto.pri_tcp.tcpsi_ini
    elif psi.soi_kind == SOCKINFO_IN:
        ini = psi.soi_proto.pri_in
    else:
        return None
    if psi.soi_family == socket.AF_INET:
        local, remote = (
            bytes(ini.insi_laddr.ina_46.i46a_addr4),
            bytes(ini.insi_faddr.ina_46.i46a_addr4),
        )
    elif psi.soi_family == socket.AF_INET6:
        local, remote = bytes(ini.insi_laddr.ina_6), bytes(ini.insi_faddr.ina_6)
    else:
        return None
    return InetSocket(
        protocol=psi.soi_protocol,
        family=psi.soi_family,
        local_ip=local,
        local_port=socket.ntohs(ini.insi_lport & 0xFFFF),
        remote_ip=remote,
        remote_port=socket.ntohs(ini.insi_fport & 0xFFFF),
        uid=psi.soi_stat.vst_uid,
    )


class LibProc(Protocol):
    """What the search needs from libproc; a fake stands in for it in tests."""

    def list_pids(self) -> list[int]: ...
    def socket_fds(self, pid: int) -> list[int] | None: ...
    def socket(self, pid: int, fd: int) -> InetSocket | None: ...
    def describe(self, pid: int) -> ProcessInfo | None: ...


class CLibProc:
    """libproc.dylib through ctypes."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("proc") or "/usr/lib/libproc.dylib"
        self._lib = ctypes.CDLL(path, use_errno=True)
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "/usr/lib/libc.dylib")
        lib = self._lib
        lib.proc_listpids.argtypes = [_u32, _u32, ctypes.c_void_p, ctypes.c_int]
        lib.proc_pidinfo.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            _u64,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        lib.proc_pidfdinfo.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        lib.proc_pidpath.argtypes = [ctypes.c_int, ctypes.c_void_p, _u32]
        for name in ("proc_listpids", "proc_pidinfo", "proc_pidfdinfo", "proc_pidpath"):
            getattr(lib, name).restype = ctypes.c_int
        self._libc.sysctl.argtypes = [
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
        self._libc.sysctl.restype = ctypes.c_int

    def list_pids(self) -> list[int]:
        size = self._lib.proc_listpids(PROC_ALL_PIDS, 0, None, 0)
        if size <= 0:
            return []
        pids = (_i32 * (size // 4 + 64))()
        size = self._lib.proc_listpids(PROC_ALL_PIDS, 0, pids, ctypes.sizeof(pids))
        return [pid for pid in pids[: max(size, 0) // 4] if pid > 0]

    def socket_fds(self, pid: int) -> list[int] | None:
        """The socket fds of `pid`; None when we may not look (another user's process)."""
        size = self._lib.proc_pidinfo(pid, PROC_PIDLISTFDS, 0, None, 0)
        if size <= 0:
            return None
        fds = (ProcFdInfo * (size // ctypes.sizeof(ProcFdInfo) + 16))()
        size = self._lib.proc_pidinfo(pid, PROC_PIDLISTFDS, 0, fds, ctypes.sizeof(fds))
        if size <= 0:
            return None
        count = size // ctypes.sizeof(ProcFdInfo)
        return [fd.proc_fd for fd in fds[:count] if fd.proc_fdtype == PROX_FDTYPE_SOCKET]

    def socket(self, pid: int, fd: int) -> InetSocket | None:
        info = SocketFdInfo()
        size = ctypes.sizeof(info)
        got = self._lib.proc_pidfdinfo(pid, fd, PROC_PIDFDSOCKETINFO, ctypes.byref(info), size)
        return decode_socket_fdinfo(info) if got == size else None

    def describe(self, pid: int) -> ProcessInfo | None:
        bsd = ProcBsdInfo()
        size = ctypes.sizeof(bsd)
        if self._lib.proc_pidinfo(pid, PROC_PIDTBSDINFO, 0, ctypes.byref(bsd), size) != size:
            return None
        name = (bsd.pbi_name or bsd.pbi_comm).decode("utf-8", "replace") or None
        path = ctypes.create_string_buffer(PROC_PIDPATHINFO_MAXSIZE)
        got = self._lib.proc_pidpath(pid, path, PROC_PIDPATHINFO_MAXSIZE)
        exe = path.value.decode("utf-8", "replace") if got > 0 else None
        uid = bsd.pbi_uid
        cmdline = self._cmdline(pid)
        return ProcessInfo(pid, name, exe=exe, cmdline=cmdline, uid=uid, user=user_name(uid))

    def _cmdline(self, pid: int) -> str | None:
        mib = (ctypes.c_int * 3)(CTL_KERN, KERN_PROCARGS2, pid)
        size = ctypes.c_size_t(0)
        if self._libc.sysctl(mib, 3, None, ctypes.byref(size), None, 0) != 0 or not size.value:
            return None
        buffer = ctypes.create_string_buffer(size.value)
        if self._libc.sysctl(mib, 3, buffer, ctypes.byref(size), None, 0) != 0:
            return None
        return parse_procargs2(buffer.raw[: size.value])


def parse_procargs2(raw: bytes) -> str | None:
    """KERN_PROCARGS2: argc, the exec path, NUL padding, then argc NUL-ended arguments."""
    if len(raw) < 4:
        return None
    argc = int.from_bytes(raw[:4], "little")
    rest = raw[4:]
    end = rest.find(b"\0")
    if end < 0:
        return None
    rest = rest[end:].lstrip(b"\0")
    args = rest.split(b"\0")[:argc]
    return trim_cmdline(b"\0".join(args)[:CMDLINE_READ_BYTES])
