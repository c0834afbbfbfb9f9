"""A live session in Redis: the streams between the API and the worker, and who runs it.

- `live:<id>` (hash): owner, model, the session's settings, `resume` (the sample after the
  last final) and `item` (the next utterance number): what a worker that takes over starts from.
- `live:<id>:in` (stream): audio (`a`: 16 kHz PCM16, `n`: the index of its first sample) and
  controls (`c`: JSON) from the API. Entries before the last final are trimmed.
- `live:<id>:out` (stream, capped): the session's events (`e`: JSON) for the API.
- `live:<id>:lease` (string, PX): the token of the worker process that runs it. Every write
  of the worker checks it (a fenced lease, like a job's): a process that lost the session,
  paused or cut off, can publish nothing once another took over.
- `live:sessions` and `live:owner:<owner>` (zsets, member -> expiry): the open sessions, for
  /metrics and the per-key limit; a session the API never closed (its process died) leaves
  them when its entry expires.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import redis

from asr_service.keys import Keys

OUT_MAXLEN = 2000
"""Events kept for the API (it reads them within milliseconds; a dead reader's are dropped)."""
SESSION_TTL_S = 120
"""Keys of a session outlive its last activity by this (the API refreshes them while open)."""

# KEYS: owner zset, sessions zset, session hash. ARGV: id, now, expiry, limit, fields (JSON).
_OPEN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
-- Already open: this open sent again (redis-py resends a command whose answer was lost). Not
-- counted against the limit a second time.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if tonumber(ARGV[4]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local fields = cjson.decode(ARGV[5])
for k, v in pairs(fields) do redis.call('HSET', KEYS[3], k, v) end
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 1
"""

# KEYS: session hash, lease. ARGV: token, lease ms, pid.
# 'claimed' with the resume point, 'busy' (another process holds it), 'gone' (closed).
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HGET', KEYS[1], 'closed') then
  return {'gone'}
end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return {'busy'} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local taken = holder == false and redis.call('HGET', KEYS[1], 'worker') ~= false
redis.call('HSET', KEYS[1], 'worker', ARGV[1], 'pid', ARGV[3])
local resume = redis.call('HMGET', KEYS[1], 'resume', 'item', 'config')
return {'claimed', resume[1] or '0', resume[2] or '0', resume[3] or '{}', taken and 1 or 0}
"""

# KEYS: lease. ARGV: token, lease ms (0: give it back). 1: renewed (or given back); 0: another
# process holds it, or nobody.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: lease, out stream, session hash, in stream. ARGV: token, lease ms, resume sample ('' for
# none), next item, trim id ('' for none), then the events (JSON each).
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for i = 7, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[i])
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], 'resume', ARGV[3], 'item', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('XTRIM', KEYS[4], 'MINID', ARGV[5]) end
return 1
"""


@dataclass(frozen=True)
class Claim:
    """What a worker that claimed a session starts from."""

    outcome: str  # 'claimed', 'busy' or 'gone'
    resume: int = 0
    item: int = 0
    config: dict | None = None
    taken_over: bool = False


class LiveStore:
    """The Redis side of live sessions, for the API and the worker alike."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._open = client.register_script(_OPEN)
        self._claim = client.register_script(_CLAIM)
        self._publish = client.register_script(_PUBLISH)
        self._renew = client.register_script(_RENEW)

    # --- the API's side ---

    def open(self, session_id: str, owner: str, limit: int, fields: dict[str, Any]) -> bool:
        """Register a session; False when `owner` already has `limit` open (0: no limit)."""
        k, now = self.keys, time.time()
        fields = {**fields, "owner": owner, "created_at": now, "config": "{}"}
        return bool(self._open(
            keys=[k.live_owner(owner), k.live_sessions, k.live(session_id)],
            args=[session_id, now, now + SESSION_TTL_S, limit, json.dumps(fields),
                  SESSION_TTL_S]))

    def configure(self, session_id: str, config: dict[str, Any]) -> None:
        """New session settings: the worker reads them from the control that follows."""
        self.client.hset(self.keys.live(session_id), "config", json.dumps(config))

    def touch(self, session_id: str, owner: str) -> None:
        """The session is still open: keep its keys and its place in the zsets."""
        k, expiry = self.keys, time.time() + SESSION_TTL_S
        with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(k.live_owner(owner), {session_id: expiry})
            pipe.zadd(k.live_sessions, {session_id: expiry})
            for key in (k.live(session_id), k.live_in(session_id), k.live_out(session_id)):
                pipe.expire(key, SESSION_TTL_S)
            pipe.execute()

    def send_audio(self, session_id: str, pcm16: bytes, first_sample: int) -> None:
        self.client.xadd(self.keys.live_in(session_id), {"a": pcm16, "n": first_sample})

    def send_control(self, session_id: str, control: dict[str, Any]) -> None:
        self.client.xadd(self.keys.live_in(session_id), {"c": json.dumps(control)})

    def events(self, session_id: str, after: str, block_ms: int) -> list[tuple[str, dict]]:
        """Events after stream id `after`, waiting up to block_ms for the first."""
        answer = self.client.xread({self.keys.live_out(session_id): after}, count=100,
                                   block=block_ms)
        if not answer:
            return []
        return [(entry_id.decode(), json.loads(fields[b"e"])) for entry_id, fields in answer[0][1]]

    def held(self, session_id: str) -> bool:
        """Whether a worker process holds the session now."""
        return bool(self.client.exists(self.keys.live_lease(session_id)))

    def close(self, session_id: str, owner: str) -> None:
        """The client left: the worker stops; the keys go soon (a worker may still be writing)."""
        k = self.keys
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(k.live(session_id), "closed", 1)
            pipe.xadd(k.live_in(session_id), {"c": json.dumps({"type": "end"})})
            pipe.zrem(k.live_owner(owner), session_id)
            pipe.zrem(k.live_sessions, session_id)
            for key in (k.live(session_id), k.live_in(session_id), k.live_out(session_id)):
                pipe.expire(key, 30)
            pipe.execute()

    def open_sessions(self) -> int:
        """Sessions open now (O(log n): entries past their expiry are not counted)."""
        return int(self.client.zcount(self.keys.live_sessions, time.time(), "+inf"))

    def count(self, figure: str, by: int = 1) -> None:
        self.client.hincrby(self.keys.live_figures, figure, by)

    def figures(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(self.keys.live_figures).items()}

    # --- the worker's side ---

    def claim(self, session_id: str, token: str, lease_ms: int) -> Claim:
        k = self.keys
        answer = self._claim(keys=[k.live(session_id), k.live_lease(session_id)],
                             args=[token, lease_ms, os.getpid()])
        outcome = answer[0].decode()
        if outcome != "claimed":
            return Claim(outcome)
        return Claim(outcome, int(answer[1]), int(answer[2]), json.loads(answer[3]),
                     bool(answer[4]))

    def read(self, session_id: str, after: str, block_ms: int) -> list[tuple[str, dict]]:
        """Input entries after `after` ('0': from the oldest kept)."""
        answer = self.client.xread({self.keys.live_in(session_id): after}, count=50,
                                   block=block_ms)
        return [(i.decode(), f) for i, f in answer[0][1]] if answer else []

    def publish(self, session_id: str, token: str, lease_ms: int, events: list[dict],
                resume: int | None = None, item: int = 0, trim_before: str = "") -> bool:
        """Events out, the resume point and the lease renewed, if `token` still holds the
        session (False: another process took it over; this one must stop)."""
        k = self.keys
        return bool(self._publish(
            keys=[k.live_lease(session_id), k.live_out(session_id), k.live(session_id),
                  k.live_in(session_id)],
            args=[token, lease_ms, "" if resume is None else resume, item, trim_before,
                  OUT_MAXLEN, *(json.dumps(e) for e in events)]))

    def renew(self, session_id: str, token: str, lease_ms: int) -> bool:
        """Extend the lease if `token` still holds it (False: this process lost the session)."""
        return bool(self._renew(keys=[self.keys.live_lease(session_id)], args=[token, lease_ms]))

    def release(self, session_id: str, token: str) -> None:
        """Give the lease back at once (the session ended), if `token` still holds it."""
        self._renew(keys=[self.keys.live_lease(session_id)], args=[token, 0])
