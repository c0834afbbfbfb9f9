"""docker/compose.yaml, checked without a Docker engine: it interpolates as `docker compose`
would, validates against the Compose Specification's JSON schema (tests/data/compose-spec.json,
from compose-spec/compose-spec@170098b), refuses to start without the secrets it publishes
ports behind, and its workers scale (`docker compose up --scale worker=N`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
SCHEMA = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"
SECRETS = {"REDIS_PASSWORD": "r", "API_KEYS": "k", "FLOWER_BASIC_AUTH": "ops:pw"}
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


class Unset(Exception):
    """A `${NAME:?message}` variable was not set: compose refuses to start."""


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose's variable interpolation: $$, ${NAME}, ${NAME:-default}, ${NAME:?error}."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if name is None:
            return "$"
        given = environ.get(name)
        if op in (":?", "?") and not given:
            raise Unset(f"{name}: {arg}")
        if op in (":-", "-") and not given:
            return arg
        return given or ""

    return _VARIABLE.sub(one, value)


def load(environ: dict[str, str]) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), environ)


def test_the_file_is_valid_against_the_compose_specification() -> None:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.instance_path)}: {e.message}"
              for e in validator.iter_errors(load(SECRETS))]
    assert not errors, errors


def test_workers_scale_they_have_no_name_port_or_host_path_of_their_own() -> None:
    worker = load(SECRETS)["services"]["worker"]
    assert "container_name" not in worker and "hostname" not in worker
    assert "ports" not in worker  # N replicas cannot publish one host port
    assert all(str(v).endswith(":ro") for v in worker.get("volumes", [])), worker["volumes"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["environment"]["ASR_USE_GPU"] == "true"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_it_refuses_to_start_without_each_secret(missing: str) -> None:
    with pytest.raises(Unset, match=missing):
        load({k: v for k, v in SECRETS.items() if k != missing})


def test_only_authenticated_services_publish_ports_and_no_secret_has_a_default() -> None:
    services = load(SECRETS)["services"]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"api", "flower"}  # redis is reached on the compose network only
    assert services["api"]["environment"]["API_KEYS"] == "k"
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "ops:pw"
    assert "--requirepass" in services["redis"]["command"]
    text = COMPOSE.read_text()
    for secret in ("REDIS_PASSWORD", "API_KEYS", "FLOWER_BASIC_AUTH", "REDIS_SENTINEL_PASSWORD",
                   "WEBHOOK_SECRET"):
        for default in re.findall(r"\$\{" + secret + r":-([^}]*)\}", text):
            assert default == "", f"{secret} has a default in compose.yaml"


def test_every_service_gets_the_same_redis_settings() -> None:
    services = load(SECRETS | {"REDIS_SENTINELS": "s1:26379,s2:26379"})["services"]
    for name in ("api", "worker", "flower", "webhooks"):
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0" and env["REDIS_PASSWORD"] == "r"
        assert env["REDIS_SENTINELS"] == "s1:26379,s2:26379", name
