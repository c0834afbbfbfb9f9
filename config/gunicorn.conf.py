"""gunicorn settings for the API: `gunicorn -c config/gunicorn.conf.py wsgi:app`."""

import sys

from asr_service.settings import Settings, is_loopback

_settings = Settings.from_env()
# Nothing listens beyond loopback without authentication (like Redis's protected mode).
if _problem := _settings.api_exposure_error():
    raise SystemExit(f"asr_service: {_problem}")
if _settings.allow_anonymous and not is_loopback(_settings.api_host):
    print(f"asr_service: WARNING: the API listens on {_settings.api_host} WITHOUT "
          "authentication (ALLOW_ANONYMOUS=true)", file=sys.stderr)

_host = f"[{_settings.api_host}]" if ":" in _settings.api_host else _settings.api_host
bind = f"{_host}:{_settings.api_port}"
workers = _settings.api_workers
# gevent: a slow client (an upload trickling in at 1 KB/s) holds a cheap greenlet, not one of
# a few threads. With gthread (8 threads x 2 workers), 32 such uploads made /health time out
# (10 s); with gevent it stayed at p99 5 ms (`make bench-slow`). CPU work (probing audio) is
# short; Redis and the broker are reached through sockets gevent makes cooperative.
worker_class = "gevent"
worker_connections = 1000
# Slow clients uploading large files must not be cut off; the API itself never waits on a model.
timeout = 120
# On SIGTERM, in-flight requests get this long; an upload stalled mid-body is cut after it.
graceful_timeout = 20
accesslog = "-"
# One JSON line per request, built with json.dumps: a %-template (access_log_format) breaks on a
# backslash or a newline in the path.
logger_class = "asr_service.access_log.JsonAccessLogger"
