"""Last good versions of list files: kept when a list loads, used when it can't."""

from __future__ import annotations

from pathlib import Path

from aidns.resolver.config import ListLimits, Settings, load_settings
from aidns.resolver.rules.lastgood import LastGood
from aidns.resolver.rules.loading import load_lists
from aidns.resolver.rules.matcher import DomainMatcher, fingerprint


def settings_for(tmp_path: Path) -> Settings:
    (tmp_path / "config.yaml").write_text("")
    return load_settings(
        config_path=tmp_path / "config.yaml", data_dir=tmp_path / "data", resolv_conf=()
    )


def test_a_list_that_breaks_keeps_its_last_good_version(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    small = lists / "small.txt"
    small.write_text("one.test\n=exact.test\n")
    big = lists / "big.yaml"
    big.write_text(
        "name: big\naction: block\ndomains:\n"
        + "".join(f"  - n{n}.big.test\n" for n in range(2500))
        + "  - {domain: keep.test, action: allow}\n"
    )
    kept = LastGood(tmp_path / "lastgood", fingerprint())
    loaded, problems = load_lists([lists], ListLimits(), kept)
    assert problems == []
    before = DomainMatcher(loaded)

    small.write_text("x" * 5000 + "\n")  # over the line limit
    big.write_text("name: big\ndomains: &a [*a]\n")  # an alias: refused
    loaded, problems = load_lists([lists], ListLimits(), kept)
    assert len(problems) == 2
    assert all("using its last good version, from" in problem for problem in problems)
    after = DomainMatcher(loaded)
    for name in (b"a.one.test", b"exact.test", b"n2499.big.test", b"keep.test", b"nothing.test"):
        assert after.decide(name) == before.decide(name), name


def test_without_a_copy_a_broken_list_is_left_out(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "new.txt").write_text("y" * 5000 + "\n")
    loaded, problems = load_lists([lists], ListLimits(), LastGood(tmp_path / "lg", 1))
    assert loaded == []
    assert problems == [f"{lists / 'new.txt'}:1: longer than 4,096 bytes (list_max_line_bytes); "
                        "the list is not used"]  # fmt: skip


def test_a_copy_made_under_another_hash_seed_is_not_used(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "l.txt").write_text("one.test\n")
    load_lists([lists], ListLimits(), LastGood(tmp_path / "lg", 1))
    assert LastGood(tmp_path / "lg", 1).fetch(lists / "l.txt") is not None
    assert LastGood(tmp_path / "lg", 2).fetch(lists / "l.txt") is None


def test_limits_name_the_file_and_the_limit(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "many.txt").write_text("".join(f"n{n}.test\n" for n in range(30)))
    (lists / "big.txt").write_text("a.test\n" * 400)
    _, problems = load_lists([lists], ListLimits(max_bytes=2048, max_entries=20))
    assert sorted(problems) == [
        f"{lists / 'big.txt'}: over 2,048 bytes (list_max_bytes); not used",
        f"{lists / 'many.txt'}: over 20 names (list_max_entries); not used",
    ]
    assert settings_for(tmp_path).list_limits == ListLimits()


def test_list_limits_come_from_the_config_and_bad_ones_name_the_key(tmp_path: Path) -> None:
    import pytest

    from aidns.resolver.errors import ConfigError

    config = tmp_path / "config.yaml"
    config.write_text("list_max_entries: 10\nlist_max_line_bytes: 512\n")
    settings = load_settings(config_path=config, data_dir=tmp_path, resolv_conf=())
    assert settings.list_limits == ListLimits(max_entries=10, max_line_bytes=512)
    config.write_text("list_max_bytes: lots\n")
    with pytest.raises(ConfigError, match=r"config.yaml:1: list_max_bytes: expected a number"):
        load_settings(config_path=config, data_dir=tmp_path, resolv_conf=())
