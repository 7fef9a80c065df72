from __future__ import annotations

import ctypes
import socket
import struct

from aidns.resolver.procinfo import libproc

# --- macOS, without a Mac: struct layouts and decoding -----------------------------------------


def test_libproc_struct_layouts_match_sys_proc_info_h() -> None:
    """Sizes and offsets of <sys/proc_info.h> (xnu) on 64-bit macOS, Intel and Apple silicon."""
    assert ctypes.sizeof(libproc.ProcFdInfo) == 8
    assert ctypes.sizeof(libproc.ProcFileInfo) == 24
    assert ctypes.sizeof(libproc.VinfoStat) == 136
    assert ctypes.sizeof(libproc.SockbufInfo) == 24
    assert ctypes.sizeof(libproc.InSockInfo) == 80
    assert ctypes.sizeof(libproc.TcpSockInfo) == 120
    assert ctypes.sizeof(libproc.SocketProto) == 528
    assert ctypes.sizeof(libproc.SocketInfo) == 768
    assert ctypes.sizeof(libproc.SocketFdInfo) == 792
    assert ctypes.sizeof(libproc.ProcBsdInfo) == 136
    psi = libproc.SocketFdInfo.psi.offset
    assert psi + libproc.SocketInfo.soi_family.offset == 184
    assert psi + libproc.SocketInfo.soi_kind.offset == 256
    proto = psi + libproc.SocketInfo.soi_proto.offset
    assert proto == 264
    assert proto + libproc.InSockInfo.insi_lport.offset == 268
    assert libproc.InSockInfo.insi_laddr.offset == 48
    assert libproc.ProcBsdInfo.pbi_uid.offset == 20
    assert libproc.ProcBsdInfo.pbi_comm.offset == 48


def fdinfo(
    kind: int, family: int, protocol: int, local: tuple[str, int], remote: tuple[str, int], uid: int
) -> libproc.SocketFdInfo:
    """A socket_fdinfo as the kernel fills it: ports in network order, v4 in the last 4 bytes."""
    info = libproc.SocketFdInfo()
    info.psi.soi_kind = kind
    info.psi.soi_family = family
    info.psi.soi_protocol = protocol
    info.psi.soi_stat.vst_uid = uid
    ini = (
        info.psi.soi_proto.pri_tcp.tcpsi_ini
        if kind == libproc.SOCKINFO_TCP
        else info.psi.soi_proto.pri_in
    )
    ini.insi_lport = struct.unpack("=H", struct.pack("!H", local[1]))[0]
    ini.insi_fport = struct.unpack("=H", struct.pack("!H", remote[1]))[0]
    for field, (ip, _) in (("insi_laddr", local), ("insi_faddr", remote)):
        packed = socket.inet_pton(family, ip)
        address = getattr(ini, field)
        if family == socket.AF_INET:
            address.ina_46.i46a_addr4[:] = list(packed)
        else:
            address.ina_6[:] = list(packed)
    return info


def test_socket_fdinfo_is_decoded() -> None:
    udp = fdinfo(
        libproc.SOCKINFO_IN, socket.AF_INET, 17, ("127.0.0.1", 53124), ("127.0.0.1", 53), 501
    )
    assert libproc.decode_socket_fdinfo(udp) == libproc.InetSocket(
        17, socket.AF_INET, bytes([127, 0, 0, 1]), 53124, bytes([127, 0, 0, 1]), 53, 501
    )
    tcp = fdinfo(libproc.SOCKINFO_TCP, socket.AF_INET6, 6, ("::1", 60000), ("::1", 53), 0)
    decoded = libproc.decode_socket_fdinfo(tcp)
    assert decoded is not None
    assert (decoded.protocol, decoded.local_port, decoded.remote_port) == (6, 60000, 53)
    assert decoded.local_ip == socket.inet_pton(socket.AF_INET6, "::1")
    unix = libproc.SocketFdInfo()
    unix.psi.soi_kind = 3  # SOCKINFO_UN
    assert libproc.decode_socket_fdinfo(unix) is None


def test_procargs2_is_parsed() -> None:
    raw = (
        struct.pack("<i", 3)
        + b"/usr/local/bin/ollama\0\0\0\0"
        + b"ollama\0serve\0--verbose\0"
        + b"HOME=/Users/u\0PATH=/usr/bin\0"
    )
    assert libproc.parse_procargs2(raw) == "ollama serve --verbose"
    assert libproc.parse_procargs2(b"\0\0") is None
