#!/usr/bin/env bash
# A local redis-server for `make run`, with append-only persistence so queued jobs survive
# a restart. Started only when nothing answers at the configured Redis URL.
set -euo pipefail
cd "$(dirname "$0")/.."
# REDIS_BIND: the addresses to listen on (space-separated); beyond loopback only with a password.
bind="${REDIS_BIND:-127.0.0.1}"
for address in $bind; do
  case "$address" in
    127.*|::1|-::1) ;;
    *) if [ -z "${REDIS_PASSWORD:-}" ]; then
         echo "REDIS_BIND=$bind listens beyond loopback: set REDIS_PASSWORD too." >&2
         exit 1
       fi ;;
  esac
done
port=$(.venv/bin/python scripts/devtools.py redis-port)
mkdir -p run/redis
# maxmemory bounds Redis whatever happens; noeviction makes a full Redis refuse writes (the API
# answers 503) instead of silently dropping queued jobs. Size it above MAX_STORED_AUDIO_MB.
# With REDIS_PASSWORD set it requires that password.
# shellcheck disable=SC2086  # $bind: one or more addresses
exec redis-server --port "$port" --bind $bind --appendonly yes --appendfsync everysec \
  --maxmemory "${REDIS_MAXMEMORY:-3gb}" --maxmemory-policy noeviction \
  ${REDIS_PASSWORD:+--requirepass "$REDIS_PASSWORD"} --dir "$PWD/run/redis" --save ""
