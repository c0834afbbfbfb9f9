"""ADMIN_API_KEYS: admin keys are valid keys too, and stay out of reprs like API_KEYS."""

from __future__ import annotations

from asr_service.settings import Settings


def test_admin_keys_are_valid_keys_hidden_in_reprs() -> None:
    settings = Settings.from_env({"API_KEYS": "tenant-1, tenant-2",
                                  "ADMIN_API_KEYS": " root-key ,"})
    assert settings.admin_key_set == frozenset({"root-key"})
    assert settings.api_key_set == frozenset({"tenant-1", "tenant-2", "root-key"})
    assert "root-key" not in repr(settings) and "tenant-1" not in repr(settings)


def test_admin_keys_alone_turn_authentication_on() -> None:
    settings = Settings.from_env({"ADMIN_API_KEYS": "root-key", "API_HOST": "0.0.0.0"})
    assert settings.api_key_set == frozenset({"root-key"})
    assert settings.api_exposure_error() is None
    assert Settings.from_env({}).admin_key_set == frozenset()
