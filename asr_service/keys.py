"""Every Redis key name of the service, in one place, for Python and for the Lua scripts.

`Keys(prefix)` builds each name from the prefix (default "asr:"); every class that touches
Redis takes the Keys it is given. The Lua scripts get the same builders, generated from these
methods (`lua_builders()`), so a name is never spelled twice. Kombu's and Celery's own keys
(queue lists, `unacked`) are theirs: broker.py reads them by kombu's layout.
"""

from __future__ import annotations

import inspect
import re

PREFIX = "asr:"


class Keys:
    """Every Redis key of the service under one prefix (rq's `key_for`, one place per type)."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.prefix = prefix
        # The job store (jobs.py reads, lifecycle.py writes through the scripts).
        self.history = f"{prefix}history"  # zset: every retained job by created_at
        self.finished = f"{prefix}finished"  # zset: terminal jobs by finished_at (retention)
        self.done_audio = f"{prefix}recordings:done"  # zset: prunable recordings by finished_at
        self.recordings_bytes = f"{prefix}recordings:bytes"  # hash: 'stored', 'active' bytes
        self.recordings_sizes = f"{prefix}recordings:sizes"  # hash: id -> its recording's bytes
        self.active_costs = f"{prefix}active:costs"  # hash: id -> bytes an active job holds
        self.events = f"{prefix}events"  # stream: one entry per transition
        self.job_finished = f"{prefix}job.finished"  # pub/sub channel: "<id> <status>" at the end
        # Figures (figures.py).
        self.figures = f"{prefix}figures"  # hash: counters kept by the lifecycle scripts
        self.recent = f"{prefix}figures:recent"  # list: latest succeeded jobs' timings
        self.submit_latency = f"{prefix}metrics:submit_latency"  # hash: histogram counters
        self.submit_latency_recent = f"{prefix}metrics:submit_latency:recent"  # list: samples
        # Webhook deliveries (webhooks.py, lua/webhook.lua).
        self.webhooks_due = f"{prefix}webhooks:due"  # zset: webhook deliveries by due time
        self.webhooks_waiting = f"{prefix}webhooks:waiting"  # zset: destinations with a line
        # The cluster (cluster.py, broker.py, sweep.py, stranded.py).
        self.workers = f"{prefix}workers"  # hash: hostname -> its latest heartbeat
        self.workers_held = f"{prefix}workers:held"  # hash: node -> messages it holds
        self.sweeper = f"{prefix}sweeper"  # string: the sweep lock's token
        self.stranded_cursor = f"{prefix}stranded:cursor"  # "score member" of the last examined
        self.stranded_suspected = f"{prefix}stranded:suspected"  # zset "id delivery" -> missed
        # Live sessions (live/relay.py).
        self.live_sessions = f"{prefix}live:sessions"  # zset: open session -> expiry time
        self.live_figures = f"{prefix}live:figures"  # hash: sessions opened/refused/taken over

    def job(self, job_id: str) -> str:
        """The hash holding a job record."""
        return f"{self.prefix}job:{job_id}"

    def audio(self, job_id: str) -> str:
        """The string holding a job's recording."""
        return f"{self.prefix}audio:{job_id}"

    def result(self, job_id: str) -> str:
        """The normalized transcript of a succeeded job (JSON)."""
        return f"{self.prefix}result:{job_id}"

    def lease(self, job_id: str) -> str:
        """The token of the runner holding a running job; expires unless renewed."""
        return f"{self.prefix}lease:{job_id}"

    def runner(self, token: str) -> str:
        """Present while the worker process with this token is alive."""
        return f"{self.prefix}runner:{token}"

    def status(self, status: str) -> str:
        """The zset of jobs in one status, by created_at."""
        return f"{self.prefix}status:{status}"

    def owner_history(self, owner: str) -> str:
        """A tenant's own history zset, by created_at (none for the anonymous tenant '')."""
        return f"{self.prefix}owner:{owner}:history"

    def owner_status(self, owner: str, status: str) -> str:
        """A tenant's own zset of jobs in one status, by created_at."""
        return f"{self.prefix}owner:{owner}:status:{status}"

    def owner_active(self, owner: str) -> str:
        """The zset of one tenant's active jobs ('' the anonymous one), by created_at."""
        return f"{self.prefix}active:owner:{owner}"

    def figures_slot(self, slot: int) -> str:
        """The hash of jobs and audio seconds finished in one SLOT_S slot (figures.py)."""
        return f"{self.prefix}figures:t:{slot}"

    def webhook(self, webhook_id: str) -> str:
        """The hash of one webhook delivery (written by lifecycle.lua, then webhooks.py)."""
        return f"{self.prefix}webhook:{webhook_id}"

    def webhooks_of(self, job_id: str) -> str:
        """The set of a job's webhook deliveries (they go when the job goes)."""
        return f"{self.prefix}webhooks:of:{job_id}"

    def webhooks_busy(self, dest: str) -> str:
        """The zset of a destination's deliveries in flight: id -> lease end."""
        return f"{self.prefix}webhooks:busy:{dest}"

    def webhooks_wait(self, dest: str) -> str:
        """The zset of a destination's deliveries waiting for a slot: id -> due time."""
        return f"{self.prefix}webhooks:wait:{dest}"

    def webhooks_claim(self, token: str) -> str:
        """The list a claim answered (id, destination, ...), kept for its lease: the same claim
        sent again (redis-py resends a command whose answer a dropped link lost) gets it."""
        return f"{self.prefix}webhooks:claim:{token}"

    def engine(self, node: str, pid: int) -> str:
        """Present while a worker child (of the main process `node`) has its model loaded."""
        return f"{self.prefix}engine:{node}:{pid}"

    def live(self, session_id: str) -> str:
        """The hash of one live session: its owner, settings and where a takeover resumes."""
        return f"{self.prefix}live:{session_id}"

    def live_in(self, session_id: str) -> str:
        """The stream of a live session's audio frames and client controls (API -> worker)."""
        return f"{self.prefix}live:{session_id}:in"

    def live_out(self, session_id: str) -> str:
        """The stream of a live session's events (worker -> API)."""
        return f"{self.prefix}live:{session_id}:out"

    def live_lease(self, session_id: str) -> str:
        """The token of the worker process running a live session; expires unless renewed."""
        return f"{self.prefix}live:{session_id}:lease"

    def live_latency(self, kind: str) -> str:
        """The hash of a live latency histogram ('partial' or 'final'; figures.py)."""
        return f"{self.prefix}metrics:live_{kind}_latency"

    def live_owner(self, owner: str) -> str:
        """The zset of one tenant's open live sessions -> expiry time (the per-key limit)."""
        return f"{self.prefix}live:owner:{owner}"

    def idempotency(self, digest: str) -> str:
        """The job an Idempotency-Key (scoped to its client, hashed) is bound to."""
        return f"{self.prefix}idempotency:{digest}"


_MARK = "\x01"


def lua_builders() -> str:
    """`K`, the Lua twin of Keys, built from the prefix in ARGV[1]: K.history, K.job(id)...

    Each Lua builder is generated from the Python one (called with placeholders), so the two
    cannot drift. Prepended to every script (lua/*.lua) by scripts.py.
    """
    keys = Keys(f"{_MARK}P{_MARK}")
    lines = ["local P = ARGV[1]", "local K = {}"]
    for name, value in vars(keys).items():
        if name != "prefix":
            lines.append(f"K.{name} = {_lua_concat(value)}")
    for name, method in inspect.getmembers(Keys, inspect.isfunction):
        if name.startswith("_"):
            continue
        params = list(inspect.signature(method).parameters)[1:]
        built = method(keys, *(f"{_MARK}{p}{_MARK}" for p in params))
        lines.append(f"function K.{name}({', '.join(params)}) return {_lua_concat(built)} end")
    return "\n".join(lines) + "\n"


def _lua_concat(template: str) -> str:
    """'\\x01P\\x01job:\\x01job_id\\x01' -> "P .. 'job:' .. job_id"."""
    parts = re.split(f"{_MARK}(\\w+){_MARK}", template)
    out = [f"'{text}'" if i % 2 == 0 else text for i, text in enumerate(parts) if text]
    return " .. ".join(out)
