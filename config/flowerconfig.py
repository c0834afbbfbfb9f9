"""Flower settings: `celery -A celery_app flower --conf=config/flowerconfig.py`.

Flower listens on FLOWER_HOST:FLOWER_PORT. Beyond loopback it refuses to start without
FLOWER_BASIC_AUTH. Its JSON API needs that login everywhere: Flower 2.2 opens it without one
only through FLOWER_UNAUTHENTICATED_API, which also sends Access-Control-Allow-Origin: * and
skips the cross-site check, so any web page could drive it; that variable is refused. With a
login, Flower refuses cross-site requests (Sec-Fetch-Site / Origin) itself.
"""

from asr_service.settings import Settings

_settings = Settings.from_env()
if _problem := _settings.flower_exposure_error():
    raise SystemExit(f"asr_service: {_problem}")

address = _settings.flower_host
port = _settings.flower_port
# Set either way: Flower also reads FLOWER_BASIC_AUTH itself, and takes an empty one for a login.
basic_auth = [_settings.flower_basic_auth] if _settings.flower_basic_auth else []
