from __future__ import annotations

from pathlib import Path

from aidns.resolver.resolvconf import (
    ResolvConf,
    is_loopback,
    is_this_host,
    nameservers,
    parse_address,
)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "resolv.conf"
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def test_nameservers_from_skips_loopback_and_junk(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "nameserver ::1\nnameserver bogus\nnameserver 0.0.0.0\nnameserver 198.51.100.1\n"
    )
    assert nameservers(path, remote_only=True) == ["198.51.100.1"]
    assert nameservers(tmp_path / "missing", remote_only=True) == []


def test_every_nameserver_line_is_read_in_order_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "search lan\nnameserver 127.0.0.53\nnameserver bogus\n"
        "nameserver 192.0.2.1 extra words\noptions edns0\nnameserver\n",
    )
    assert nameservers(path, remote_only=False) == ["127.0.0.53", "bogus", "192.0.2.1"]
    assert nameservers(path, remote_only=True) == ["192.0.2.1"]


def test_a_hash_starts_a_comment_anywhere_and_a_semicolon_does_not(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# nameserver 192.0.2.1\n  nameserver 192.0.2.2 # the router\n"
        "nameserver 192.0.2.3#no space\n#nameserver 192.0.2.4\n; nameserver 192.0.2.5\n"
        "  # nameserver 192.0.2.6\nNAMESERVER 192.0.2.7\n",
    )
    assert nameservers(path, remote_only=False) == ["192.0.2.2", "192.0.2.3"]


def test_a_scope_id_is_kept_as_written_and_judged_without_it(tmp_path: Path) -> None:
    path = write(tmp_path, "nameserver fe80::1%eth0\nnameserver ::1%lo\nnameserver fe80::x%eth0\n")
    assert nameservers(path, remote_only=False) == ["fe80::1%eth0", "::1%lo", "fe80::x%eth0"]
    assert nameservers(path, remote_only=True) == ["fe80::1%eth0"]
    assert str(parse_address("fe80::1%eth0")) == "fe80::1"
    assert parse_address("fe80::x%eth0") is None


def test_loopback_and_this_host_are_two_questions() -> None:
    for text in ("127.0.0.1", "127.0.0.53", "::1", "::1%lo"):
        assert is_loopback(text) and is_this_host(text)
    for text in ("0.0.0.0", "::"):
        assert not is_loopback(text) and is_this_host(text)
    for text in ("192.0.2.1", "fe80::1%eth0", "bogus", "", "localhost"):
        assert not is_loopback(text) and not is_this_host(text)


def test_a_missing_or_unreadable_file_has_no_nameservers(tmp_path: Path) -> None:
    missing = ResolvConf.read(tmp_path / "missing")
    assert missing.text == "" and missing.nameservers == ()
    assert nameservers(tmp_path / "missing", remote_only=False) == []
    assert nameservers(tmp_path, remote_only=False) == []  # a directory


def test_any_line_ending_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b"nameserver 192.0.2.1\r\nnameserver \xff\xfe\rnameserver 192.0.2.2")
    conf = ResolvConf.read(path)
    assert conf.nameservers == ("192.0.2.1", "\ufffd\ufffd", "192.0.2.2")
    assert nameservers(path, remote_only=True) == ["192.0.2.1", "192.0.2.2"]


def test_the_resolved_stub_is_seen_only_as_the_first_nameserver(tmp_path: Path) -> None:
    stub = "# managed by man:systemd-resolved(8)\nnameserver 127.0.0.53\noptions edns0\n"
    assert ResolvConf.read(write(tmp_path, stub)).asks_resolved_stub
    assert ResolvConf.read(write(tmp_path, "nameserver 127.0.0.54\n")).asks_resolved_stub
    second = "nameserver 192.0.2.1\nnameserver 127.0.0.53\n"
    assert not ResolvConf.read(write(tmp_path, second)).asks_resolved_stub
    assert not ResolvConf.read(write(tmp_path, "")).asks_resolved_stub
