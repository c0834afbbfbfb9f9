"""gunicorn settings for the API: `gunicorn -c config/gunicorn.conf.py wsgi:app`."""

from asr_service.settings import Settings

_settings = Settings.from_env()

bind = f"0.0.0.0:{_settings.api_port}"
workers = _settings.api_workers
worker_class = "gthread"
threads = 8
# Slow clients uploading large files must not be cut off; the API itself never waits on a model.
timeout = 120
graceful_timeout = 30
accesslog = "-"
access_log_format = '{"ts_local": "%(t)s", "component": "api-access", "method": "%(m)s", ' \
    '"path": "%(U)s", "status": %(s)s, "bytes": %(B)s, "duration_ms": %(M)s}'
