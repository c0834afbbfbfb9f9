"""config/.env.example and docs/configuration.md's table are generated from the settings."""

from __future__ import annotations

from dataclasses import fields

from asr_service.settings import ALIASES, Settings
from asr_service.settings import docs as settings_docs


def test_env_example_and_configuration_table_are_up_to_date() -> None:
    stale = [str(p.relative_to(settings_docs.ROOT)) for p in settings_docs.stale()]
    assert not stale, (f"{', '.join(stale)} stale: regenerate with "
                       f"`{settings_docs.COMMAND}` (or `make settings-docs`)")


def test_every_setting_is_documented_once_in_a_group() -> None:
    documented = [v.field for v in settings_docs.variables()]
    assert sorted(documented) == sorted(f.name for f in fields(Settings))
    assert all(v.doc and v.group for v in settings_docs.variables())


def test_deprecated_aliases_are_named_in_both_documents() -> None:
    env_example = settings_docs.env_example()
    table = settings_docs.settings_table()
    for old, new in ALIASES.items():
        assert f"{new}=" in env_example and f"Deprecated alias: {old}" in env_example
        assert f"`{new}` (deprecated alias: `{old}`)" in table
