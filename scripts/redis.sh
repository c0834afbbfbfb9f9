#!/usr/bin/env bash
# A local redis-server for `make run`, with append-only persistence so queued jobs survive
# a restart. Started only when nothing answers at the configured Redis URL.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/python scripts/devtools.py redis-port)
mkdir -p run/redis
# maxmemory bounds Redis whatever happens; noeviction makes a full Redis refuse writes (the API
# answers 503) instead of silently dropping queued jobs. Size it above MAX_STORED_AUDIO_MB.
# Loopback only; with REDIS_PASSWORD set it also requires that password.
exec redis-server --port "$port" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
  --maxmemory "${REDIS_MAXMEMORY:-3gb}" --maxmemory-policy noeviction \
  ${REDIS_PASSWORD:+--requirepass "$REDIS_PASSWORD"} --dir "$PWD/run/redis" --save ""
