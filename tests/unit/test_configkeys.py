"""The one table of config keys: its defaults are the real ones, and the README lists them all."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from aidns.resolver.config import load_settings
from aidns.resolver.configkeys import CONFIG_KEYS, starter_config
from aidns.resolver.system.install import STARTER_CONFIG

README = Path(__file__).parents[2] / "README.md"
WITH_VALUES = [name for name, key in CONFIG_KEYS.items() if not key.default.startswith("(")]


def settings_from(tmp_path: Path, text: str) -> object:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    settings = load_settings(
        config_path=config, data_dir=tmp_path / "data", upstream=["127.0.0.1:5300"]
    )
    return dataclasses.replace(settings, config_path=None)


@pytest.mark.parametrize("name", WITH_VALUES)
def test_each_documented_default_is_the_default(tmp_path: Path, name: str) -> None:
    written = f"{name}: {CONFIG_KEYS[name].default}\n"
    assert settings_from(tmp_path, written) == settings_from(tmp_path, ""), written


def test_the_starter_config_is_every_key_commented_out_and_loads_as_the_defaults(
    tmp_path: Path,
) -> None:
    assert STARTER_CONFIG.startswith("# aidns config")
    assert yaml.safe_load(STARTER_CONFIG) is None
    uncommented = "\n".join(
        line[2:].split("  #")[0]
        for line in STARTER_CONFIG.splitlines()
        if line.startswith("# ") and line[2:].split(":")[0] in WITH_VALUES
    )
    assert settings_from(tmp_path, uncommented) == settings_from(tmp_path, "")
    for name in CONFIG_KEYS:
        assert f"\n# {name}:" in starter_config("# header")


def test_the_readme_names_every_config_key() -> None:
    named = set(re.findall(r"`([a-z_]+)`", README.read_text()))
    assert set(CONFIG_KEYS) - named == set()
