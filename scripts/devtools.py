"""Small checks the run scripts need: does Redis answer, is it local, on which port.

`python scripts/devtools.py redis-port` (scripts/run.sh and scripts/redis.sh do).
"""

from __future__ import annotations

import sys
from urllib.parse import urlparse

import redis

from asr_service import redis_conn
from asr_service.settings import Settings


def main(argv: list[str]) -> int:
    """`redis-answers` / `redis-is-local` exit 0 or 1; `redis-port` prints the port."""
    settings = Settings.from_env()
    url = urlparse(settings.redis_url)
    command = argv[0] if argv else ""
    if command == "redis-answers":
        try:
            redis_conn.client(settings, socket_connect_timeout=1, socket_timeout=1).ping()
            return 0
        except redis.RedisError:
            return 1
    if command == "redis-is-local":  # under Sentinel, never one this script should start
        local = url.hostname in ("127.0.0.1", "localhost", "::1")
        return 0 if local and not settings.sentinel_nodes else 1
    if command == "redis-port":
        print(url.port or 6379)
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
