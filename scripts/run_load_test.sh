#!/usr/bin/env bash
# Load test of the service running on this host: scripts/run_load_test.sh [concurrency] [duration_s]
# Target: $ASR_URL, else http://127.0.0.1:$API_PORT (8000); loopback only. Writes
# loadtest-report.json and loadtest.png into $LOADTEST_OUT (default: the current directory).
# When the service requires API keys, pass one in $ASR_API_KEY.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
url="${ASR_URL:-http://127.0.0.1:${API_PORT:-8000}}"
exec "$root/.venv/bin/python" "$root/scripts/loadtest.py" "${1:-4}" "${2:-30}" --url "$url" \
  --out-dir "${LOADTEST_OUT:-.}" ${LOADTEST_ARGS:-}
