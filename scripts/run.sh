#!/usr/bin/env bash
# The whole stack in the foreground (Redis if none answers, API, workers, Flower, the webhook
# deliverer); Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
devtools() { .venv/bin/python scripts/devtools.py "$@"; }
procs="api worker flower webhooks"
if ! devtools redis-answers; then
  if ! devtools redis-is-local; then
    echo "Redis at the configured URL does not answer and is not local: start it first." >&2
    exit 1
  fi
  procs="redis $procs"
fi
echo "starting: $procs"
exec .venv/bin/honcho -f Procfile start $procs
