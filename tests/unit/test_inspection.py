"""`check`'s verdicts, and what `aidns lists` and `lists show` report."""

from __future__ import annotations

from pathlib import Path

import pytest

from aidns.resolver.config import Settings, load_settings
from aidns.resolver.errors import ConfigError
from aidns.resolver.rules.catalogue import UnknownListError, set_list_enabled
from aidns.resolver.rules.inspection import check_name, list_infos, show_list
from aidns.resolver.rules.lists import ListAction


def settings_for(tmp_path: Path, config: str = "") -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return load_settings(config_path=path, data_dir=tmp_path / "data", resolv_conf=())


def own_lists(settings: Settings) -> Path:
    lists = settings.data_dir / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    return lists


def test_check_verdicts_name_the_rule_list_and_entry(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "allow: [ok.ingest.sentry.io]\nblock: [mine.example]\n")
    blocked = check_name(settings, "Telemetry.LMStudio.ai.")
    assert (blocked.name, blocked.verdict) == ("telemetry.lmstudio.ai", "blocked")
    assert blocked.decision is not None and blocked.decision.list_name == "lmstudio"
    assert blocked.entry is not None
    assert (blocked.entry.purpose, blocked.entry.breaks, blocked.entry.verified) == (
        "telemetry",
        "no",
        False,
    )
    assert ("lmstudio", "lmstudio.ai", ListAction.WATCH) in [
        (m.list_name, m.rule, m.action) for m in blocked.matches
    ]
    watched = check_name(settings, "api.openai.com")
    assert watched.verdict == "watched" and watched.entry is not None
    assert watched.entry.purpose == "cloud-inference" and "OpenAI.ts" in watched.entry.evidence
    allowed = check_name(settings, "ok.ingest.sentry.io")
    assert allowed.verdict == "allowed" and allowed.decision is not None
    assert allowed.decision.list_name == "config:allow"
    assert [(m.list_name, m.enabled) for m in allowed.matches if m.list_name == "sentry-all"] == [
        ("sentry-all", False)
    ]
    assert check_name(settings, "x.mine.example").verdict == "blocked"
    forwarded = check_name(settings, "example.com")
    assert (forwarded.verdict, forwarded.decision, forwarded.matches) == ("forwarded", None, ())


def test_check_sees_big_lists_and_turned_off_ones(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    lines = [f"0.0.0.0 n{i}.ads.example" for i in range(3000)] + ["||whole.example^"]
    (own_lists(settings) / "ads.txt").write_text("\n".join(lines) + "\n")
    big = check_name(settings, "n42.ads.example")
    assert (big.verdict, big.entry) == ("blocked", None)
    assert big.decision is not None and big.decision.rule == "=n42.ads.example"
    assert [m.rule for m in check_name(settings, "a.b.whole.example").matches] == ["whole.example"]
    set_list_enabled(settings, "ads", False)
    off = check_name(settings, "n42.ads.example")
    assert off.verdict == "forwarded"
    assert [(m.list_name, m.enabled) for m in off.matches] == [("ads", False)]


def test_check_refuses_a_bad_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a domain name"):
        check_name(settings_for(tmp_path), "bad..name")


def test_list_infos_and_show(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    (own_lists(settings) / "mine.txt").write_text("a.example\nbad..name\n")
    infos, problems = list_infos(settings)
    by_name = {info.name: info for info in infos}
    assert [i.name for i in infos] == sorted(by_name)
    assert (by_name["jan"].origin, by_name["jan"].actions) == ("shipped", ("block", "watch"))
    mine = by_name["mine"]
    assert (mine.origin, mine.entries, mine.skipped) == ("local", 1, 1)
    assert mine.updated is not None and any("bad..name" in p for p in problems)
    info, loaded = show_list(settings, "huggingface")
    assert info.actions == ("watch",) and info.homepage == "https://huggingface.co"
    hub = next(rule for rule in loaded.rules if rule.domain == "huggingface.co")
    assert "HF_HUB_DISABLE_TELEMETRY" in hub.note and hub.breaks == "yes"
    with pytest.raises(UnknownListError):
        show_list(settings, "nosuch")


def test_lists_count_only_evidenced_entries_as_coverage(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    (own_lists(settings) / "mine.yaml").write_text(
        "name: mine\ndomains:\n"
        "  - {domain: a.example, purpose: telemetry, breaks: 'no', evidence: '[SRC] x'}\n"
        "  - {domain: b.example, purpose: telemetry, breaks: 'no', evidence: guide,\n"
        "     verified: false}\n"
        "  - c.example\n"
    )
    infos, _ = list_infos(settings)
    counts = {info.name: (info.entries, info.evidenced, info.unverified) for info in infos}
    assert counts["mine"] == (3, 1, 1)
    assert counts["lmstudio"][2] == 1 and counts["jan"][2] == 1 and counts["streamlit"][2] == 1
    lmstudio = next(info for info in infos if info.name == "lmstudio")
    assert lmstudio.evidenced == lmstudio.entries - 1
    assert lmstudio.as_json()["unverified"] == 1
