"""Flower settings: `celery -A celery_app flower --conf=config/flowerconfig.py`.

Flower listens on FLOWER_HOST:FLOWER_PORT. Beyond loopback it refuses to start without
FLOWER_BASIC_AUTH, and its JSON API is never open without a login there; on loopback without
a login the API is open to this host only (the local `make run` stack).
"""

from asr_service.settings import Settings, is_loopback

_settings = Settings.from_env()
if _problem := _settings.flower_exposure_error():
    raise SystemExit(f"asr_service: {_problem}")

address = _settings.flower_host
port = _settings.flower_port
# Set either way: Flower also reads FLOWER_BASIC_AUTH itself, and takes an empty one for a login.
basic_auth = [_settings.flower_basic_auth] if _settings.flower_basic_auth else []
unauthenticated_api = is_loopback(_settings.flower_host) and not _settings.flower_basic_auth
