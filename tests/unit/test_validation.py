"""The shipped catalogue's schema and policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from aidns.resolver.config import shipped_lists_dir
from aidns.resolver.query import Action
from aidns.resolver.rules.lists import ListAction, list_files
from aidns.resolver.rules.loading import load_list, load_lists
from aidns.resolver.rules.matcher import DomainMatcher
from aidns.resolver.rules.validation import validate_catalogue

SHIPPED = shipped_lists_dir()


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
        # issue 15
        *("claude-code", "gemini-cli", "codex", "cline", "roo-code", "crewai", "ray", "mlflow"),
        *("dvc", "unstructured", "qdrant", "weaviate", "chatbox", "jetbrains", "statsig"),
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
        # issue 15: each new entry, as the issue lists it
        ("statsig.anthropic.com", Action.BLOCKED, "claude-code"),
        ("o1158394.ingest.us.sentry.io", Action.BLOCKED, "sentry"),
        ("ab.chatgpt.com", Action.BLOCKED, "codex"),
        ("o33249.ingest.us.sentry.io", Action.WATCHED, "sentry"),
        ("data.cline.bot", Action.BLOCKED, "cline"),
        ("ph.roocode.com", Action.BLOCKED, "roo-code"),
        ("app.roocode.com", Action.WATCHED, "roo-code"),
        ("telemetry.crewai.com", Action.BLOCKED, "crewai"),
        ("usage-stats.ray.io", Action.BLOCKED, "ray"),
        ("config.mlflow-telemetry.io", Action.BLOCKED, "mlflow"),
        ("analytics.dvc.org", Action.BLOCKED, "dvc"),
        ("updater.dvc.org", Action.WATCHED, "dvc"),
        ("packages.unstructured.io", Action.BLOCKED, "unstructured"),
        ("telemetry.qdrant.io", Action.BLOCKED, "qdrant"),
        ("telemetry.weaviate.io", Action.BLOCKED, "weaviate"),
        ("o4504521589325824.ingest.us.sentry.io", Action.BLOCKED, "sentry"),
        ("o4507954455314432.ingest.us.sentry.io", Action.BLOCKED, "sentry"),
        ("plausible.midway.run", Action.BLOCKED, "chatbox"),
        ("sentry.midway.run", Action.BLOCKED, "chatbox"),
        ("api.gradio.app", Action.WATCHED, "gradio"),
        ("analytics.services.jetbrains.com", Action.BLOCKED, "jetbrains"),
        ("eu.posthog.com", Action.BLOCKED, "posthog"),
        ("events.eu1.segmentapis.com", Action.BLOCKED, "segment"),
        ("telemetry.individual.githubcopilot.com", Action.BLOCKED, "copilot"),
    ],
)
def test_default_verdicts(name: str, verdict: Action, list_name: str) -> None:
    decision = default_matcher().decide(name.encode())
    assert decision is not None
    assert (decision.action, decision.list_name) == (verdict, list_name)


@pytest.mark.parametrize(
    "name",
    [
        "browser-intake-us5-datadoghq.com",
        "http-intake.logs.us5.datadoghq.com",
        "browser-intake-ap2-datadoghq.com",
    ],
)
def test_datadog_reaches_every_program_so_it_blocks_only_when_turned_on(name: str) -> None:
    assert default_matcher().decide(name.encode()) is None
    decision = default_matcher("datadog").decide(name.encode())
    assert decision is not None and (decision.action, decision.list_name) == (
        Action.BLOCKED,
        "datadog",
    )


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
    "cloudflare-dns.com",
    "resources.jetbrains.com",
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


@pytest.mark.parametrize(
    ("name", "list_name"),
    [
        ("play.googleapis.com", "gemini-cli"),  # a shared Google host: exact, and off
        ("www.google-analytics.com", "google-analytics"),
        ("api.statsig.com", "statsig"),
        ("events.statsigapi.net", "statsig"),
    ],
)
def test_names_off_by_default_block_once_their_list_is_on(name: str, list_name: str) -> None:
    assert default_matcher().decide(name.encode()) is None
    decision = default_matcher(list_name).decide(name.encode())
    assert decision is not None
    assert (decision.action, decision.list_name) == (Action.BLOCKED, list_name)


def test_shared_google_host_is_blocked_exactly() -> None:
    gemini = default_matcher("gemini-cli")
    assert gemini.decide(b"other.play.googleapis.com") is None
    assert gemini.decide(b"googleapis.com") is None


def test_unverified_names_are_the_ones_without_a_primary_source() -> None:
    lists, _ = load_lists([SHIPPED])
    unverified = {rule.domain for d in lists for rule in d.rules if not rule.verified}
    assert {"telemetry.lmstudio.ai", "analytics.jan.ai", "webhooks.fivetran.com"} <= unverified
    assert "ingest.de.sentry.io" not in unverified  # now in Sentry's own documentation


def test_new_entries_name_tools_that_have_opt_outs() -> None:
    lists, _ = load_lists([SHIPPED])
    rules = {rule.domain: rule for d in lists for rule in d.rules}
    assert rules["statsig.anthropic.com"].tools == ("claude-code",)
    assert rules["o1158394.ingest.us.sentry.io"].tools == ("claude-code",)
    assert "haystack" in rules["eu.posthog.com"].tools
    assert {"kilo-code", "goose", "openhands", "mem0"} <= set(rules["us.i.posthog.com"].tools)


def test_schema_refuses_a_tool_that_tools_yaml_lacks(tmp_path: Path) -> None:
    (tmp_path / "tools.yaml").write_text(
        "tools:\n  - name: real\n    description: A tool.\n    match: [{process: [real]}]\n"
    )
    (tmp_path / "vendor.yaml").write_text(
        GOOD.format(name="vendor", domain="t.vendor.example").replace(
            "domains:", "tools: [real, imaginary]\ndomains:"
        )
    )
    errors = validate_catalogue(tmp_path)
    assert len(errors) == 1 and "'imaginary' is not a tool in tools.yaml" in errors[0], errors


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
