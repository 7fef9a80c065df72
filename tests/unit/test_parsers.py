"""Reading list files: third-party formats (hosts, AdBlock, plain and wildcard lines, big and
small alike) and aidns's own YAML lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aidns.resolver.errors import ListError
from aidns.resolver.query import Action
from aidns.resolver.rules.lists import BIG_LIST_ENTRIES, ListAction
from aidns.resolver.rules.loading import load_list, load_lists
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.parsers import load_text_list


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def verdict(matcher: DomainMatcher, name: str) -> tuple[Action, str] | None:
    decision = matcher.decide(name.encode())
    return (decision.action, decision.rule) if decision else None


HOSTS_LINES = (
    "# Title: a hosts file",
    "127.0.0.1 localhost",
    "127.0.0.1 localhost.localdomain",
    "255.255.255.255 broadcasthost",
    "::1 localhost ip6-localhost ip6-loopback",
    "fe80::1%lo0 localhost",
    "ff02::1 ip6-allnodes",
    "0.0.0.0 0.0.0.0",
    "",
    "0.0.0.0 ads.example",
    "0.0.0.0 one.example two.example   # several names, trailing comment",
    "127.0.0.1\ttabbed.example",
    ":: six.example",
    "0 short.example",
    "0.0.0.0 Upper.Example.",
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ads.example", (Action.BLOCKED, "=ads.example")),
        ("sub.ads.example", None),  # hosts lines are exact, as Pi-hole and AdGuard Home read them
        ("one.example", (Action.BLOCKED, "=one.example")),
        ("two.example", (Action.BLOCKED, "=two.example")),
        ("tabbed.example", (Action.BLOCKED, "=tabbed.example")),
        ("six.example", (Action.BLOCKED, "=six.example")),
        ("short.example", (Action.BLOCKED, "=short.example")),
        ("upper.example", (Action.BLOCKED, "=upper.example")),
        ("localhost", None),
        ("localhost.localdomain", None),
        ("broadcasthost", None),
        ("ip6-localhost", None),
        ("ip6-allnodes", None),
        ("0.0.0.0", None),
    ],
)
def test_hosts_lines(tmp_path: Path, name: str, expected: tuple[Action, str] | None) -> None:
    loaded = load_text_list(write(tmp_path / "hosts.txt", *HOSTS_LINES))
    assert loaded.skipped == 0, loaded.problems
    assert verdict(DomainMatcher([loaded]), name) == expected


ADBLOCK_LINES = (
    "[Adblock Plus 2.0]",
    "! Title: an AdBlock list",
    "||tracker.example^",
    "||dotted.example.^",
    "||opts.example^$third-party",
    "@@||allowed.example^",
    "/ads[0-9]+\\.example/",
    "example.org##.banner",
    "example.org#@#.banner",
    "||mid*dle.example^",
    "|https://url.example/path",
    "*.wild.example",
    "=exact.example",
    "plain.example",
    "a*b.example",
)


def test_adblock_and_wildcard_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "adblock.txt", *ADBLOCK_LINES)
    loaded = load_text_list(path)
    matcher = DomainMatcher([loaded])
    assert verdict(matcher, "x.tracker.example") == (Action.BLOCKED, "tracker.example")
    assert verdict(matcher, "tracker.example") == (Action.BLOCKED, "tracker.example")
    assert verdict(matcher, "dotted.example") == (Action.BLOCKED, "dotted.example")
    assert verdict(matcher, "wild.example") == (Action.BLOCKED, "wild.example")
    assert verdict(matcher, "deep.down.wild.example") == (Action.BLOCKED, "wild.example")
    assert verdict(matcher, "exact.example") == (Action.BLOCKED, "=exact.example")
    assert verdict(matcher, "sub.exact.example") is None
    assert verdict(matcher, "sub.plain.example") == (Action.BLOCKED, "plain.example")
    for skipped in ("opts.example", "allowed.example", "ads1.example", "example.org"):
        assert verdict(matcher, skipped) is None
    # Unsupported syntax is skipped and counted, never fatal; the first few are shown.
    assert loaded.skipped == 8
    assert loaded.problems == [
        f"{path}:5: AdBlock rule with $options, not supported: '||opts.example^$third-party'",
        f"{path}:6: AdBlock exception rule, not supported: '@@||allowed.example^'",
        f"{path}:7: regular-expression rule, not supported: '/ads[0-9]+\\\\.example/'",
        f"{path}:8: AdBlock cosmetic rule, not supported: 'example.org##.banner'",
        f"{path}:9: AdBlock cosmetic rule, not supported: 'example.org#@#.banner'",
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("bad..name", "not a domain name"),
        ("has space.example", "not a domain name"),
        ("-dash.example", "not a domain name"),
        ("0.0.0.0 bad..name", "not a domain name in a hosts line"),
        ("::1", "an address without a name"),
        ("||mid*dle.example^", "AdBlock rule not supported"),
        ("a*b.example", "wildcard in the middle of a name, not supported"),
        ("x" * 64 + ".example", "not a domain name"),
    ],
)
def test_bad_lines_say_why(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path / "bad.txt", "good.example", line)
    loaded = load_text_list(path)
    assert loaded.skipped == 1
    assert loaded.problems[0].startswith(f"{path}:2: {reason}: ")
    assert [rule.text for rule in loaded.rules] == ["good.example"]


def test_a_list_of_only_bad_lines_loads_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "page.txt", "<html>", "<body>not a list</body>", "</html>")
    loaded = load_text_list(path)
    assert len(loaded) == 0 and loaded.skipped == 3


def test_crlf_bom_idna_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "windows.hosts"
    path.write_bytes(
        b"\xef\xbb\xbf0.0.0.0 first.example\r\n# comment\r\n0.0.0.0 b\xc3\xbccher.example\r\n"
        b"0.0.0.0 last.example"
    )
    loaded = load_list(path)
    assert loaded.skipped == 0, loaded.problems
    assert [rule.text for rule in loaded.rules] == [
        "=first.example",
        "=xn--bcher-kva.example",
        "=last.example",
    ]


def big_hosts(path: Path, count: int, extra: tuple[str, ...] = ()) -> list[str]:
    names = [f"host{i}.big.example" for i in range(count)]
    lines = ["# a big hosts file", "127.0.0.1 localhost", "::1 localhost"]
    for i, name in enumerate(names):
        if i % 1000 == 0:
            lines.append(f"# section {i}")
        lines.append(f"0.0.0.0 {name}")
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return names


def test_big_hosts_list_fast_path_agrees_with_the_line_parser(tmp_path: Path) -> None:
    # Big enough for several 1 MB chunks, so the fast path and the chunk seams are exercised.
    names = big_hosts(tmp_path / "big.txt", 60_000, ("0.0.0.0 bad..name", "plain.tail.example"))
    big = load_text_list(tmp_path / "big.txt")
    assert big.rules == [] and len(big.exact_hashes) == 60_000
    assert len(big.subtree_hashes) == 1
    assert big.skipped == 1 and big.problems[0].startswith(f"{tmp_path / 'big.txt'}:60064: ")
    matcher = DomainMatcher([big])
    for name in (names[0], names[29_999], names[-1]):
        assert verdict(matcher, name) == (Action.BLOCKED, "=" + name)
        assert verdict(matcher, "sub." + name) is None
    assert verdict(matcher, "x.plain.tail.example") == (Action.BLOCKED, "plain.tail.example")
    assert verdict(matcher, "localhost") is None
    assert verdict(matcher, "host60000.big.example") is None


def test_a_chunk_mixing_hosts_and_plain_lines_keeps_each_meaning(tmp_path: Path) -> None:
    lines = []
    for i in range(BIG_LIST_ENTRIES):
        lines.append(f"0.0.0.0 exact{i}.example" if i % 2 else f"subtree{i}.example")
    path = write(tmp_path / "mixed.txt", *lines)
    matcher = DomainMatcher([load_text_list(path)])
    assert verdict(matcher, "a.subtree0.example") == (Action.BLOCKED, "subtree0.example")
    assert verdict(matcher, "exact1.example") == (Action.BLOCKED, "=exact1.example")
    assert verdict(matcher, "a.exact1.example") is None


def test_hosts_line_without_a_name_in_a_clean_chunk_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "holes.txt", "0.0.0.0 a.example", "0.0.0.0 ", "plain.example")
    loaded = load_text_list(path)
    assert loaded.skipped == 1 and ":2: an address without a name" in loaded.problems[0]
    assert sorted(rule.text for rule in loaded.rules) == ["=a.example", "plain.example"]


def test_text_list_action_comes_from_its_sidecar(tmp_path: Path) -> None:
    write(tmp_path / "watched.txt", "cloud.example")
    (tmp_path / "watched.source.json").write_text(json.dumps({"action": "watch"}))
    write(tmp_path / "plain.list", "ads.example")
    write(tmp_path / "blocked.hosts", "0.0.0.0 more.example")
    (tmp_path / ".hidden.txt").write_text("hidden.example\n")
    lists, problems = load_lists([tmp_path])
    assert problems == []
    assert {d.name: d.action for d in lists} == {
        "blocked": ListAction.BLOCK,
        "plain": ListAction.BLOCK,
        "watched": ListAction.WATCH,
    }
    assert verdict(DomainMatcher(lists), "a.cloud.example") == (Action.WATCHED, "cloud.example")


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ListError, match="unknown list format"):
        load_list(write(tmp_path / "list.csv", "a.example"))


YAML_LIST = """\
name: vendor
description: >-
  Folded
  text.
homepage: https://vendor.example
action: block
default: off
domains:
  - domain: telemetry.vendor.example
    purpose: telemetry
    breaks: no
    evidence: "[SRC] somewhere"
    verified: false
    note: an opt-out exists
  - domain: models.vendor.example
    action: watch
    purpose: model-registry
    breaks: yes
    evidence: "[DOC] docs"
  - domain: bad.vendor.example
    action: sinkhole
"""


def test_yaml_entries_may_set_their_own_action(tmp_path: Path) -> None:
    path = tmp_path / "vendor.yaml"
    path.write_text(YAML_LIST)
    loaded = load_list(path)
    assert (loaded.enabled, loaded.enabled_by_default) == (False, False)
    assert loaded.homepage == "https://vendor.example" and loaded.description == "Folded text."
    telemetry, models = loaded.rules
    assert (telemetry.action, telemetry.breaks, telemetry.verified) == (
        ListAction.BLOCK,
        "no",
        False,
    )
    assert telemetry.note == "an opt-out exists"
    assert (models.action, models.breaks) == (ListAction.WATCH, "yes")
    assert loaded.skipped == 1 and "sinkhole" in loaded.problems[0]
    assert loaded.actions() == [ListAction.BLOCK, ListAction.WATCH]
    loaded.enabled = True
    matcher = DomainMatcher([loaded])
    assert verdict(matcher, "x.telemetry.vendor.example") == (
        Action.BLOCKED,
        "telemetry.vendor.example",
    )
    assert verdict(matcher, "models.vendor.example") == (Action.WATCHED, "models.vendor.example")


def test_big_yaml_list_keeps_entries_with_another_action(tmp_path: Path) -> None:
    entries = "".join(f"  - n{i}.example\n" for i in range(BIG_LIST_ENTRIES))
    path = tmp_path / "big.yaml"
    path.write_text(
        "name: big\naction: block\ndomains:\n"
        + entries
        + "  - {domain: cloud.example, action: watch, purpose: cloud-inference}\n"
    )
    loaded = load_list(path)
    assert len(loaded.subtree_hashes) == BIG_LIST_ENTRIES
    assert [rule.domain for rule in loaded.rules] == ["cloud.example"]
    matcher = DomainMatcher([loaded])
    assert verdict(matcher, "n7.example") == (Action.BLOCKED, "n7.example")
    assert verdict(matcher, "api.cloud.example") == (Action.WATCHED, "cloud.example")


@pytest.mark.parametrize("default", ["maybe", "2"])
def test_yaml_default_must_be_on_or_off(tmp_path: Path, default: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(f"name: odd\ndefault: {default}\ndomains: [a.example]\n")
    with pytest.raises(ListError, match="default"):
        load_list(path)


@pytest.mark.parametrize("prefix", ["0.0.0.0 ", "127.0.0.1\t", ":: ", "0\t"])
def test_clean_hosts_chunks_of_every_common_shape_are_exact(tmp_path: Path, prefix: str) -> None:
    path = write(tmp_path / "clean.txt", *(f"{prefix}n{i}.example" for i in range(3000)))
    loaded = load_text_list(path)
    assert (loaded.skipped, len(loaded.exact_hashes), len(loaded.subtree_hashes)) == (0, 3000, 0)
    matcher = DomainMatcher([loaded])
    assert verdict(matcher, "n2999.example") == (Action.BLOCKED, "=n2999.example")
    assert verdict(matcher, "sub.n2999.example") is None


def test_text_list_big_and_small_agree(tmp_path: Path) -> None:
    names = [f"n{i}.example" for i in range(BIG_LIST_ENTRIES + 10)]
    big = tmp_path / "big.txt"
    big.write_text("\n".join(names) + "\n=exact.example\n")
    small = tmp_path / "small.txt"
    small.write_text("# comment\nN5.Example.\n\n=exact.example  # trailing comment\r\n")
    for path, expected in ((big, len(names) + 1), (small, 2)):
        loaded = load_text_list(path)
        assert len(loaded) == expected
        matcher = DomainMatcher([loaded])
        assert matcher.decide(b"sub.n5.example") == (Action.BLOCKED, "n5.example", path.stem)
        assert matcher.decide(b"exact.example") == (Action.BLOCKED, "=exact.example", path.stem)
        assert matcher.decide(b"sub.exact.example") is None
        assert matcher.decide(b"n5.example.org") is None
    assert load_text_list(big).rules == []
    assert [r.text for r in load_text_list(small).rules] == ["n5.example", "=exact.example"]


def test_text_list_bad_lines_are_skipped_and_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "mixed.txt"
    good = [f"good{i}.example" for i in range(3000)]
    lines = [
        *good[:1500],
        "bad..name",
        *good[1500:],
        "has space.example",
        "-dash.example",
        "last.example",
    ]
    path.write_text("\n".join(lines))
    loaded = load_text_list(path)
    assert loaded.skipped == 3
    assert loaded.problems[0] == f"{path}:1501: not a domain name: 'bad..name'"
    assert loaded.problems[1].startswith(f"{path}:3002:")
    matcher = DomainMatcher([loaded])
    assert matcher.decide(b"good2999.example") is not None
    assert matcher.decide(b"last.example") is not None


def test_yaml_list(tmp_path: Path) -> None:
    path = tmp_path / "vendor.yaml"
    path.write_text(
        "name: vendor\ndescription: d\naction: watch\ndomains:\n"
        "  - plain.example\n  - domain: exact.example\n    match: exact\n    purpose: telemetry\n"
        "  - domain: bad..example\n  - {domain: ok.example, colour: red}\n"
    )
    loaded = load_list(path)
    assert loaded.action is ListAction.WATCH
    assert [r.text for r in loaded.rules] == ["plain.example", "=exact.example"]
    assert loaded.rules[1].purpose == "telemetry"
    assert loaded.skipped == 2
    assert loaded.problems[0].startswith(f"{path}:9: ")
    assert "unknown key(s) colour" in loaded.problems[1] and loaded.problems[1].startswith(
        f"{path}:10:"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\ndomains: [a.example\n", ":3: not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("name: x\nactoin: block\ndomains: []\n", "unknown key(s) actoin"),
        ("name: x\naction: nuke\ndomains: []\n", "is not block, watch or allow"),
        ("name: x\ndomains: a.example\n", "`domains` must be a list"),
    ],
)
def test_yaml_list_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(ListError) as caught:
        load_list(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_load_lists_keeps_going_past_a_broken_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: [unclosed\n")
    (tmp_path / "b.txt").write_text("b.example\n")
    (tmp_path / "notes.md").write_text("ignored")
    lists, errors = load_lists([tmp_path])
    assert [d.name for d in lists] == ["b"]
    assert len(errors) == 1 and errors[0].startswith(str(tmp_path / "a.yaml"))


def test_shipped_lists_block_the_guides_names() -> None:
    from aidns.resolver.config import shipped_lists_dir

    lists, errors = load_lists([shipped_lists_dir()])
    assert errors == []
    assert {"lmstudio", "jan", "sentry"} <= {d.name for d in lists}
    matcher = DomainMatcher(lists)
    for name in (b"telemetry.lmstudio.ai", b"analytics.jan.ai", b"o19358.ingest.sentry.io"):
        decision = matcher.decide(name)
        assert decision is not None and decision.action is Action.BLOCKED, name
    assert matcher.decide(b"sentry.io") is None
