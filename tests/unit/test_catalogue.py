"""Which lists are on and why: the file's default, the config's `lists:`, the state file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aidns.resolver.config import Settings, load_settings
from aidns.resolver.errors import ConfigError
from aidns.resolver.rules.catalogue import (
    STATE_NAME,
    UnknownListError,
    read_state,
    set_list_enabled,
)
from aidns.resolver.rules.inspection import list_infos
from aidns.resolver.rules.ruleset import build_rule_set


def settings_for(tmp_path: Path, config: str = "") -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    return load_settings(config_path=path, data_dir=tmp_path / "data", resolv_conf=())


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
    rules = build_rule_set(settings)
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
        build_rule_set(settings)
    where = str(settings.data_dir / STATE_NAME) + (f":{line}" if line else "")
    assert str(caught.value).startswith(where + ":")


def test_state_naming_a_removed_list_is_a_problem_not_an_error(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "lists: {disable: [gone]}")
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / STATE_NAME).write_text("enable: [vanished]\ndisable: []\n")
    problems = build_rule_set(settings).problems
    assert any("no list named 'gone'" in p for p in problems)
    assert any("'vanished'" in p and STATE_NAME in p for p in problems)


def test_a_list_state_file_over_its_limit_is_refused_by_name(tmp_path: Path) -> None:
    from aidns.resolver.rules.catalogue import STATE_MAX_BYTES, STATE_NAME

    (tmp_path / STATE_NAME).write_text("#" * (STATE_MAX_BYTES + 1))
    with pytest.raises(ConfigError, match=r"lists.state.yaml: over 1,048,576 bytes"):
        read_state(tmp_path)
