from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aidns.resolver.config import (
    FALLBACK_UPSTREAM,
    Settings,
    load_settings,
    nameservers_from,
    remember_upstreams,
)
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
    ],
)
def test_config_errors_name_file_and_line(tmp_path: Path, config: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, config)
    assert str(caught.value).startswith(str(tmp_path / "config.yaml") + where)


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
    remember_upstreams(first)
    later = settings_for(
        tmp_path, resolv="nameserver 127.0.0.1\n"
    )  # the system now points at aidns
    assert [str(u) for u in later.upstreams] == ["192.0.2.53", "fd00::53"]
    assert "remembered" in later.upstream_source


def test_nameservers_from_skips_loopback_and_junk(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "nameserver ::1\nnameserver bogus\nnameserver 0.0.0.0\nnameserver 198.51.100.1\n"
    )
    assert nameservers_from(path) == ["198.51.100.1"]
    assert nameservers_from(tmp_path / "missing") == []
