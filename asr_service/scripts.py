"""The Lua scripts (asr_service/lua/), each prepended with a prelude generated from Python.

The prelude carries what Python and Lua share, so the scripts never restate it: the key
builders (`K`, keys.lua_builders()), the statuses (`STATUS.queued`..., `STATUSES`,
`TERMINAL`, from jobs.Status), the error types (`ERROR.worker_lost`..., from jobs.ErrorType),
and the figures' slot width, samples kept and histogram bounds (figures.py).

Every script takes ARGV[1] = the key prefix and builds its key names from it: the deployment
is one Redis (a master and its replicas, Sentinel), never Redis Cluster, where scripts must
name every key in KEYS[] (redis.io EVAL).
"""

from __future__ import annotations

from pathlib import Path

from asr_service import figures
from asr_service.jobs import ACTIVE, STATUSES, ErrorType
from asr_service.keys import lua_builders

LUA = Path(__file__).with_name("lua")


def prelude() -> str:
    """The shared names and constants as Lua (locals of the script they open)."""
    def table(entries: list[str]) -> str:
        return "{" + ", ".join(entries) + "}"

    status = table([f"{s.name.lower()} = '{s}'" for s in STATUSES])
    terminal = table([f"['{s}'] = true" for s in STATUSES if s not in ACTIVE])
    error = table([f"{e.name.lower()} = '{e}'" for e in ErrorType])
    return (lua_builders()
            + f"local STATUS = {status}\n"
            + f"local STATUSES = {table([repr(str(s)) for s in STATUSES])}\n"
            + f"local TERMINAL = {terminal}\n"
            + f"local ERROR = {error}\n"
            + f"local SLOT_S, SLOT_TTL_S = {figures.SLOT_S}, {figures.SLOT_TTL_S}\n"
            + f"local RECENT_SAMPLES = {figures.RECENT_SAMPLES}\n"
            + figures.lua_constants())


def source(name: str) -> str:
    """The lifecycle script lua/<name>.lua as Redis runs it: the prelude, common.lua (the
    shared functions), then its own body. (webhook.lua, run by the deliverer, gets only the
    key builders: webhooks.py.)"""
    own = (LUA / f"{name}.lua").read_text()
    shebang = ""
    if own.startswith("#!"):  # `#!lua flags=...` (allow-oom) counts only as the first line
        shebang, _, own = own.partition("\n")
        shebang += "\n"
    return shebang + prelude() + (LUA / "common.lua").read_text() + own
