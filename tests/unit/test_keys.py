"""Key names and the Lua prelude come from one place (keys.Keys, scripts.prelude())."""

from __future__ import annotations

import re

from asr_service.jobs import Keys as ReExported
from asr_service.keys import Keys, lua_builders
from asr_service.scripts import LUA, prelude, source


def test_every_key_is_under_the_prefix():
    keys = Keys("p:")
    names = [v for k, v in vars(keys).items() if k != "prefix"]
    names += [keys.job("i"), keys.owner_status("o", "queued"), keys.engine("n", 1),
              keys.idempotency("d"), keys.webhooks_wait("http://h:80")]
    assert all(name.startswith("p:") for name in names)
    assert len(set(names)) == len(names)
    assert ReExported is Keys  # jobs.Keys still works


def test_lua_builders_are_generated_from_the_python_ones():
    lua = lua_builders()
    assert "local P = ARGV[1]" in lua
    assert "K.history = P .. 'history'" in lua
    assert "function K.job(job_id) return P .. 'job:' .. job_id end" in lua
    assert ("function K.owner_status(owner, status) return P .. 'owner:' .. owner .. "
            "':status:' .. status end") in lua
    public = [n for n in vars(Keys) if not n.startswith("_")]
    assert all(f"function K.{n}(" in lua for n in public)


def test_the_prelude_carries_statuses_error_types_and_figures():
    lua = prelude()
    assert "local STATUS = {queued = 'queued', processing = 'processing'," in lua
    assert ("local TERMINAL = {['succeeded'] = true, ['failed'] = true, ['cancelled'] = true}"
            in lua)
    assert "worker_lost = 'worker-lost'" in lua
    assert "local SLOT_S, SLOT_TTL_S = 10, 900" in lua


def test_the_scripts_restate_no_key_name_or_status():
    for name in ("create", "transition", "remove", "renew", "webhook"):
        own = (LUA / f"{name}.lua").read_text()
        if name != "webhook":
            assert source(name).endswith(own.partition("allow-oom\n")[2] or own)
            assert prelude() in source(name)
        assert "P .. " not in own and "'asr:" not in own, name
        assert not re.search(r"'(queued|processing|succeeded|failed|cancelled|worker-lost)'",
                             own), name
