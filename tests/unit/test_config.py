from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aidns.resolver.config import (
    Settings,
    TcpConfig,
    load_settings,
)
from aidns.resolver.discovery import FALLBACK_UPSTREAM, remember_upstreams
from aidns.resolver.endpoints import parse_upstream
from aidns.resolver.errors import ConfigError


def settings_for(
    tmp_path: Path, config: str = "", *, resolv: str = "nameserver 127.0.0.53\n", **flags: Any
) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text(resolv)
    return load_settings(
        config_path=path, data_dir=tmp_path / "data", resolv_conf=[resolv_conf], **flags
    )


def test_defaults(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert [str(a) for a in settings.listen] == ["127.0.0.1:53", "[::1]:53"]
    assert [str(u) for u in settings.upstreams] == [FALLBACK_UPSTREAM]
    assert settings.upstream_timeout_s == 2.0 and settings.cache.size == 20000
    assert str(settings.block_response) == "null"


def test_flags_beat_config(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path,
        "listen: ['127.0.0.1:5300']\nupstream: 127.0.0.1:5301\n"
        "cache_size: 5\nblock-response: nxdomain\n",
        listen=["[::1]:5400"],
        cache_size=7,
    )
    assert [str(a) for a in settings.listen] == ["[::1]:5400"]
    assert [str(u) for u in settings.upstreams] == ["127.0.0.1:5301"]
    assert settings.cache.size == 7
    assert str(settings.block_response) == "nxdomain"


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ("listen: ['127.0.0.1:99999']\n", ":1: listen"),
        ("\ncolour: red\n", ":2: colour: unknown key"),
        ("upstream: ['ftp://x']\n", ":1: upstream"),
        ("cache_size: -1\n", ":1: cache_size"),
        ("block_response: maybe\n", ":1: block_response"),
        ("allow_net: ['10.0.0.0/33']\n", ":1: allow_net"),
        ("log_level: loud\n", ":1: log_level"),
        ("listen: [unclosed\n", ":2: not valid YAML"),
        ("- a list\n", ":1: the config must be a mapping"),
        ("lists: {drop: [x]}\n", ":1: lists"),
        ("bootstrap: ['tls://dns.google']\n", ":1: bootstrap: 'tls://dns.google' must be given"),
        ("tcp_max_clients: 0\n", ":1: tcp_max_clients: expected a number of TCP connections"),
        ("\ntcp_max_queued_bytes: lots\n", ":2: tcp_max_queued_bytes: expected a number"),
        ("tcp_max_in_progress: -1\n", ":1: tcp_max_in_progress: expected a number"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, config: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, config)
    assert str(caught.value).startswith(str(tmp_path / "config.yaml") + where)


def test_tcp_limits_have_defaults_and_come_from_the_config(tmp_path: Path) -> None:
    assert settings_for(tmp_path).tcp == TcpConfig(10.0, 100, 65536, 16)
    settings = settings_for(
        tmp_path,
        "tcp_idle_timeout: 2\ntcp_max_clients: 5\ntcp-max-queued-bytes: 4096\n"
        "tcp_max_in_progress: 2\n",
    )
    assert settings.tcp == TcpConfig(2.0, 5, 4096, 2)
    assert "tcp: at most 5 clients" in "\n".join(settings.describe())


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(config_path=tmp_path / "nope.yaml", data_dir=tmp_path)


def test_loop_to_own_listen_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="queries would loop"):
        settings_for(tmp_path, listen=["127.0.0.1:5353"], upstream=["127.0.0.1:5353"])
    with pytest.raises(ConfigError, match="queries would loop"):
        settings_for(tmp_path, listen=["0.0.0.0:53"], upstream=["udp://127.0.0.1"])
    settings_for(tmp_path, listen=["127.0.0.1:5353"], upstream=["127.0.0.1:53"])


def test_system_upstreams_are_remembered(tmp_path: Path) -> None:
    resolv = (
        "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53 # router\n"
        "nameserver fd00::53\noptions edns0\n"
    )
    first = settings_for(tmp_path, resolv=resolv)
    assert [str(u) for u in first.upstreams] == ["192.0.2.53", "fd00::53"]
    assert first.upstreams_from_system
    remember_upstreams(first.data_dir, first.upstreams)
    later = settings_for(
        tmp_path, resolv="nameserver 127.0.0.1\n"
    )  # the system now points at aidns
    assert [str(u) for u in later.upstreams] == ["192.0.2.53", "fd00::53"]
    assert "remembered" in later.upstream_source
    assert later.follow_resolv_conf == (tmp_path / "resolv.conf",)


def test_the_system_nameservers_of_now_beat_the_remembered_ones(tmp_path: Path) -> None:
    remember_upstreams(tmp_path / "data", [parse_upstream("192.0.2.53")])  # the home router
    moved = settings_for(tmp_path, resolv="nameserver 198.51.100.53\n")  # a cafe's network
    assert [str(u) for u in moved.upstreams] == ["198.51.100.53"]
    assert moved.upstreams_from_system


def test_a_system_nameserver_that_is_aidns_itself_is_skipped(tmp_path: Path) -> None:
    resolv = "nameserver 192.0.2.7\nnameserver 192.0.2.8\n"
    settings = settings_for(tmp_path, resolv=resolv, listen=["192.0.2.7:53"])
    assert [str(u) for u in settings.upstreams] == ["192.0.2.8"]


def test_configured_upstreams_are_not_followed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, upstream=["192.0.2.1"], resolv="nameserver 192.0.2.9\n")
    assert settings.follow_resolv_conf == ()
    assert "following" not in "".join(settings.describe())


@pytest.mark.parametrize(
    ("config", "flags", "resolv", "expected"),
    [
        # flags beat the config, which beats every default
        (
            "bootstrap: [192.0.2.53]\n",
            {"bootstrap": ["192.0.2.54:5353"]},
            "",
            (["192.0.2.54:5353"], "from flags"),
        ),
        ("bootstrap: [192.0.2.53]\n", {}, "", (["192.0.2.53"], "from {config}")),
        # the upstreams given by IP can find the others
        (
            "upstream: [tls://dns.example, 'tls://192.0.2.9#dns.example']\n",
            {},
            "",
            (["tls://192.0.2.9#dns.example"], "the upstreams given by IP"),
        ),
        # then the system's nameservers, never its loopback stub
        (
            "upstream: [tls://dns.example]\n",
            {},
            "nameserver 127.0.0.53\nnameserver 192.0.2.1\n",
            (["192.0.2.1"], "from {resolv}"),
        ),
        (
            "upstream: [tls://dns.example]\n",
            {},
            "nameserver 127.0.0.53\n",
            ([], "no nameserver by IP known"),
        ),
    ],
)
def test_bootstrap_servers(
    tmp_path: Path, config: str, flags: dict[str, Any], resolv: str, expected: tuple[Any, str]
) -> None:
    settings = settings_for(tmp_path, config, resolv=resolv, **flags)
    servers, source = expected
    source = source.format(config=tmp_path / "config.yaml", resolv=tmp_path / "resolv.conf")
    assert ([str(spec) for spec in settings.bootstrap], settings.bootstrap_source) == (
        servers,
        source,
    )


def test_bootstrap_is_shown_only_when_an_upstream_needs_it(tmp_path: Path) -> None:
    by_name = settings_for(tmp_path, "upstream: [tls://dns.example]\n")
    assert by_name.describe()[-1] == "bootstrap: the system (no nameserver by IP known)"
    assert by_name.warnings() == [
        "tls://dns.example: found through the system's own lookup, which loops once the system "
        "resolves through aidns; give the address (tls://IP#name) or a `bootstrap` server"
    ]
    by_ip = settings_for(tmp_path, "upstream: [192.0.2.1]\n")
    assert not any(line.startswith("bootstrap") for line in by_ip.describe())
    assert by_ip.warnings() == []
    found = settings_for(tmp_path, "upstream: [tls://dns.example]\nbootstrap: [192.0.2.1]\n")
    assert found.warnings() == []


def test_bootstrap_flag_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--bootstrap: bad upstream 'dns\.google'"):
        settings_for(tmp_path, bootstrap=["dns.google"])
    with pytest.raises(ConfigError, match="queries would loop"):
        settings_for(tmp_path, listen=["127.0.0.1:5353"], bootstrap=["127.0.0.1:5353"])


def test_a_config_file_over_one_mib_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("block: [" + "a.example, " * 100_000 + "]\n")
    with pytest.raises(ConfigError, match=r"config.yaml: over 1,048,576 bytes, the most a config"):
        load_settings(config_path=config, data_dir=tmp_path, resolv_conf=())
