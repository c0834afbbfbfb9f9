#!/usr/bin/env bash
# A local redis-server for `make run`, with append-only persistence so queued jobs survive
# a restart. Started only when nothing answers at the configured Redis URL.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$(.venv/bin/python -m asr_service.devtools redis-port)
mkdir -p run/redis
exec redis-server --port "$port" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
  --dir "$PWD/run/redis" --save ""
