"""The shipped catalogue's schema and policy, list on/off state, and `check`'s verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aidns.resolver.app import build_rules
from aidns.resolver.config import Settings, load_settings, shipped_lists_dir
from aidns.resolver.errors import ConfigError
from aidns.resolver.query import Action
from aidns.resolver.rules.catalogue import (
    STATE_NAME,
    UnknownListError,
    check_name,
    list_infos,
    read_state,
    set_list_enabled,
    show_list,
    validate_catalogue,
)
from aidns.resolver.rules.lists import DomainMatcher, ListAction, list_files, load_list, load_lists

SHIPPED = shipped_lists_dir()


def settings_for(tmp_path: Path, config: str = "") -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return load_settings(config_path=path, data_dir=tmp_path / "data", resolv_conf=())


def test_shipped_catalogue_is_valid() -> None:
    assert validate_catalogue(SHIPPED) == []


def test_every_tool_and_vendor_the_issue_names_has_a_list() -> None:
    names = {load_list(path).name for path in list_files([SHIPPED])}
    wanted = {
        *("ollama", "lmstudio", "jan", "gpt4all", "anythingllm", "open-webui", "vllm"),
        *("gradio", "huggingface", "chroma", "langsmith", "streamlit", "wandb", "continue"),
        *("copilot", "cursor", "codeium", "tabnine", "cody", "aider"),
        *("sentry", "sentry-all", "posthog", "segment", "amplitude", "mixpanel", "bugsnag"),
        *("datadog", "umami", "plausible", "rollbar", "cloud-ai"),
    }
    assert wanted <= names


def default_matcher(*enable: str) -> DomainMatcher:
    lists, problems = load_lists([SHIPPED])
    assert problems == []
    for domain_list in lists:
        domain_list.enabled = domain_list.enabled_by_default or domain_list.name in enable
    return DomainMatcher(lists)


@pytest.mark.parametrize(
    ("name", "verdict", "list_name"),
    [
        ("telemetry.lmstudio.ai", Action.BLOCKED, "lmstudio"),
        ("analytics.jan.ai", Action.BLOCKED, "jan"),
        ("stats.vllm.ai", Action.BLOCKED, "vllm"),
        ("o151352.ingest.sentry.io", Action.BLOCKED, "sentry"),
        ("o19358.ingest.sentry.io", Action.BLOCKED, "sentry"),
        ("us.i.posthog.com", Action.BLOCKED, "posthog"),
        ("api.mixpanel.com", Action.BLOCKED, "mixpanel"),
        ("copilot-telemetry.githubusercontent.com", Action.BLOCKED, "copilot"),
        ("api.openai.com", Action.WATCHED, "cloud-ai"),
        ("api.anthropic.com", Action.WATCHED, "cloud-ai"),
        ("router.huggingface.co", Action.WATCHED, "cloud-ai"),
        ("registry.ollama.ai", Action.WATCHED, "ollama"),
        ("huggingface.co", Action.WATCHED, "huggingface"),
        ("cas-bridge.xethub.hf.co", Action.WATCHED, "huggingface"),
        ("versions-prod.lmstudio.ai", Action.WATCHED, "lmstudio"),
        ("api.githubcopilot.com", Action.WATCHED, "copilot"),
    ],
)
def test_default_verdicts(name: str, verdict: Action, list_name: str) -> None:
    decision = default_matcher().decide(name.encode())
    assert decision is not None
    assert (decision.action, decision.list_name) == (verdict, list_name)


SHARED = [
    "github.com",
    "api.github.com",
    "raw.githubusercontent.com",
    "objects.githubusercontent.com",
    "pypi.org",
    "files.pythonhosted.org",
    "quay.io",
    "s3.amazonaws.com",
    "some-bucket.s3.amazonaws.com",
    "storage.googleapis.com",
    "other-bucket.r2.cloudflarestorage.com",
    "dd20bb891979d25aebc8bec07b2b3bbc.r2.cloudflarestorage.com",
    "openaipublic.blob.core.windows.net",
    "someone.blob.core.windows.net",
    "huggingface.co",
    "cdn-lfs.hf.co",
    "sentry.io",
    "posthog.com",
    "us.posthog.com",
    "other-app.a.run.app",
]


@pytest.mark.parametrize("name", SHARED)
def test_shared_infrastructure_is_never_blocked_even_with_every_list_on(name: str) -> None:
    everything = default_matcher(*(p.stem for p in list_files([SHIPPED])))
    decision = everything.decide(name.encode())
    assert decision is None or decision.action is not Action.BLOCKED


def test_sentry_by_default_blocks_only_the_ai_tools_organisations() -> None:
    assert default_matcher().decide(b"o4507.ingest.us.sentry.io") is None
    assert default_matcher().decide(b"sentry.io") is None
    wholesale = default_matcher("sentry-all")
    for name in (b"o4507.ingest.us.sentry.io", b"o1.ingest.sentry.io", b"o2.ingest.de.sentry.io"):
        decision = wholesale.decide(name)
        assert decision is not None and decision.list_name == "sentry-all"
    assert wholesale.decide(b"sentry.io") is None


def test_every_default_entry_gets_its_own_action() -> None:
    """No entry of a list that is on by default is shadowed by another list's rule."""
    matcher = default_matcher()
    lists, _ = load_lists([SHIPPED])
    for domain_list in lists:
        for rule in domain_list.rules if domain_list.enabled_by_default else ():
            decision = matcher.decide(rule.domain.encode())
            assert decision is not None, rule
            assert (decision.action.value, decision.rule) == (
                {"block": "blocked", "watch": "watched"}[rule.action.value],
                rule.text,
            ), rule


def test_the_seed_articles_names_stay_blocked_but_unverified() -> None:
    lists, _ = load_lists([SHIPPED])
    rules = {rule.domain: rule for d in lists for rule in d.rules}
    for name in ("telemetry.lmstudio.ai", "analytics.jan.ai"):
        assert rules[name].action is ListAction.BLOCK and rules[name].verified is False
    assert all(rule.evidence for rule in rules.values())


GOOD = """\
name: {name}
description: A vendor.
homepage: https://vendor.example
action: block
default: on
domains:
  - domain: {domain}
    purpose: telemetry
    breaks: "no"
    evidence: "[SRC] vendor/app@abc:telemetry.py"
"""


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (GOOD.replace("default: on", "default: on\ncolour: red"), "unknown key 'colour'"),
        (GOOD.replace("    purpose:", "    owner: me\n    purpose:"), "unknown key 'owner'"),
        (GOOD.replace("name: {name}", "name: Vendor_One"), "is not lower-case letters"),
        (GOOD.replace("domain: {domain}", "domain: Bad..Name"), "is not a lower-case domain"),
        (GOOD.replace("domain: {domain}", "domain: tele.example."), "without a final dot"),
        (
            GOOD.replace('    evidence: "[SRC] vendor/app@abc:telemetry.py"\n', ""),
            "missing `evidence`",
        ),
        (GOOD.replace('"[SRC] vendor/app@abc:telemetry.py"', '""'), "missing `evidence`"),
        (GOOD.replace("purpose: telemetry", "purpose: ads"), "purpose 'ads' is not one of"),
        (GOOD.replace('breaks: "no"', "breaks: no"), "(quote it)"),
        (GOOD.replace('breaks: "no"', "breaks: partial"), "blocked by default but breaks"),
        (GOOD.replace('breaks: "no"', 'breaks: "yes"'), "watch it instead"),
        (GOOD.replace("action: block", "action: allow"), "action 'allow' is not block or watch"),
        (GOOD.replace("default: on", "default: sometimes"), "default 'sometimes' is not on or off"),
        (GOOD.replace("homepage: https://", "homepage: http://"), "is not an https:// address"),
        (GOOD.replace("domain: {domain}", "domain: github.com"), "blocks shared github.com"),
        (GOOD.replace("domain: {domain}", "domain: r2.cloudflarestorage.com"), "shared *.r2"),
        (GOOD.replace("domain: {domain}", "domain: windows.net"), "shared blob.core.windows.net"),
        (GOOD.replace("domain: {domain}", "domain: io"), "whole top-level domain"),
        (GOOD.replace("name: {name}", "name: other"), "differs from the file name"),
        (GOOD + "    verified: true\n", "write `verified: false`"),
    ],
)
def test_schema_errors(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "vendor.yaml").write_text(text.format(name="vendor", domain="tele.example"))
    errors = validate_catalogue(tmp_path)
    assert any(error in e for e in errors), errors
    assert all(e.startswith(str(tmp_path / "vendor.yaml")) for e in errors)


def test_schema_accepts_the_good_file_and_watching_shared_hosts(tmp_path: Path) -> None:
    (tmp_path / "vendor.yaml").write_text(GOOD.format(name="vendor", domain="tele.example"))
    watched = GOOD.replace("action: block", "action: watch").replace(
        'breaks: "no"', 'breaks: "yes"'
    )
    (tmp_path / "hub.yaml").write_text(watched.format(name="hub", domain="huggingface.co"))
    assert validate_catalogue(tmp_path) == []


def test_schema_refuses_a_name_on_two_lists_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(GOOD.format(name="one", domain="tele.example"))
    (tmp_path / "two.yaml").write_text(GOOD.format(name="two", domain="tele.example"))
    assert validate_catalogue(tmp_path) == [
        f"{tmp_path / 'two.yaml'}:7: tele.example is also on the one list"
    ]


# On or off: the file's default, then the config's `lists:`, then `aidns lists enable/disable`.
@pytest.mark.parametrize(
    ("list_name", "config", "command", "expected", "why"),
    [
        ("jan", "", None, True, "default"),
        ("sentry-all", "", None, False, "default"),
        ("jan", "lists: {disable: [jan]}", None, False, "config"),
        ("sentry-all", "lists: {enable: [sentry-all]}", None, True, "config"),
        ("jan", "lists: {disable: [jan]}", True, True, "lists enable"),
        ("sentry-all", "lists: {enable: [sentry-all]}", False, False, "lists disable"),
        ("jan", "", False, False, "lists disable"),
        ("sentry-all", "", True, True, "lists enable"),
    ],
)
def test_on_off_precedence(
    tmp_path: Path, list_name: str, config: str, command: bool | None, expected: bool, why: str
) -> None:
    settings = settings_for(tmp_path, config)
    if command is not None:
        set_list_enabled(settings, list_name, command)
    infos, _ = list_infos(settings)
    info = next(i for i in infos if i.name == list_name)
    assert (info.enabled, info.why) == (expected, why)
    rules = build_rules(settings)
    assert next(d for d in rules.lists if d.name == list_name).enabled is expected


def test_the_latest_choice_wins_and_the_state_file_is_plain_yaml(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    first = set_list_enabled(settings, "jan", False)
    assert (first.enabled, first.was_enabled, first.config_said) == (False, True, None)
    set_list_enabled(settings, "sentry-all", True)
    again = set_list_enabled(settings, "jan", True)
    assert (again.enabled, again.was_enabled) == (True, False)
    state_path = settings.data_dir / STATE_NAME
    assert yaml.safe_load(state_path.read_text()) == {
        "enable": ["sentry-all", "jan"],
        "disable": [],
    }
    assert not list(settings.data_dir.glob(f".{STATE_NAME}*")), "no temporary file left"
    assert read_state(settings.data_dir).enable == ("sentry-all", "jan")


def test_unknown_list_names_the_known_ones(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(UnknownListError) as caught:
        set_list_enabled(settings, "nosuch", True)
    assert "no list named 'nosuch'" in str(caught.value)
    assert {"jan", "lmstudio", "cloud-ai"} <= set(caught.value.known)
    assert not (settings.data_dir / STATE_NAME).exists()


@pytest.mark.parametrize(
    ("text", "line"),
    [("enable: [jan\n", 2), ("enable: jan\n", None), ("colour: red\n", None)],
)
def test_a_broken_state_file_is_an_error_naming_it(
    tmp_path: Path, text: str, line: int | None
) -> None:
    settings = settings_for(tmp_path)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / STATE_NAME).write_text(text)
    with pytest.raises(ConfigError) as caught:
        build_rules(settings)
    where = str(settings.data_dir / STATE_NAME) + (f":{line}" if line else "")
    assert str(caught.value).startswith(where + ":")


def test_state_naming_a_removed_list_is_a_problem_not_an_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "lists: {disable: [gone]}")
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / STATE_NAME).write_text("enable: [vanished]\ndisable: []\n")
    problems = build_rules(settings).problems
    assert any("no list named 'gone'" in p for p in problems)
    assert any("'vanished'" in p and STATE_NAME in p for p in problems)


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
