-- The one way a job changes status. ARGV: prefix, id, move (JSON):
--   now           the time of the move
--   to            the new status
--   from          statuses it may leave (else 'skip')
--   delivery      fence: the record's delivery (celery_id) must be this one
--   runner        fence: the record's runner token must be this one
--   owner         fence: the record's owner (tenant) must be this one, else 'missing'
--   set           fields to write (plain values, encoded here)
--   claim         {token, lease_ms, max_deliveries, worker, pid, runner_ttl_s}: take the lease
--                 and run it, 'busy' while the current runner lives (or may: verdict()),
--                 'gave-up' once its runners died max_deliveries times
--   dead_only     only when the current runner is gone (recovering an orphan)
--   needs_audio   'gone' when the recording was removed
--   result        JSON transcript, stored with a succeeded job
--   retention_s, max_recordings, max_stored_bytes, event, reason
--   nonce         this call's (hex): kept in the record with its outcome (last_move), so a
--                 resend is answered as the first
--   job_overhead, max_active, max_active_per_owner: a retry (terminal -> queued) goes through
--                 the same caps and budget as a submit (common.lua refusal())
-- Answers {outcome, record as a flat list}: ok | gave-up | skip | busy | gone | missing, or
-- for a retry full | queue-full | owner-full (nothing changed).
-- An active job has no TTL (activate() PERSISTs it); only a terminal one gets one.
local id, move = ARGV[2], cjson.decode(ARGV[3])
local now = move.now

local job, flat = load(id)
if not job then return {'missing'} end
-- Another tenant's job is answered as no job at all (and its record is not returned).
if given(move.owner) and (job.owner or '') ~= move.owner then return {'missing'} end

-- Did the run a claim takes over end with its worker process dead? Only such a takeover counts
-- as a delivery that killed its worker (job.deliveries): a re-claim after a Redis blip, a
-- NotReplicated claim or a JobBusy retry finds its runner alive. The run is the one still
-- `processing`, or the one `recover` took the job from (lost_runner). A runner's heartbeat key
-- outlives its process by up to runner_ttl_s, so a runner whose lease lapsed while its key lives
-- is 'unsure' until runner_ttl_s after that was first seen (unsure_since): then it is alive.
local function verdict(claim, now)
  local token = job.runner
  if job.status ~= STATUS.processing then token = job.lost_runner end
  if token == nil or token == claim.token then return 'alive' end
  if redis.call('EXISTS', K.runner(token)) == 0 then return 'died' end
  if job.unsure_since and now - job.unsure_since >= claim.runner_ttl_s then return 'alive' end
  return 'unsure'
end

-- A move already made, sent again (redis-py resends a command whose answer a dropped link or a
-- timeout lost): the record keeps the nonce and outcome of the last move it made, so the resend
-- gets the first answer and changes nothing (a claim is not 'busy' on its own lease, a success
-- is not taken for another run's, a retry is not a 409).
if given(move.nonce) and job.last_move then
  local nonce, said = string.match(job.last_move, '^(%x+) (.+)$')
  if nonce == move.nonce then return {said, flat} end
end
local allowed = false
for _, status in ipairs(move.from) do
  if job.status == status then allowed = true end
end
if not allowed then return {'skip', flat} end
if given(move.delivery) and job.celery_id ~= move.delivery then return {'skip', flat} end
if given(move.runner) and job.runner ~= move.runner then return {'skip', flat} end
if job.status == STATUS.processing and (given(move.claim) or move.dead_only) then
  local holder = redis.call('GET', K.lease(id))
  if holder and redis.call('EXISTS', K.runner(holder)) == 1 then
    return {'busy', flat}
  end
end
if move.needs_audio and job.audio_removed_at then return {'gone', flat} end

local to, set, outcome, event = move.to, move.set, 'ok', move.event
if not given(set) or next(set) == nil then set = {} end
if given(move.claim) then
  local claim = move.claim
  local seen = verdict(claim, now)
  if seen == 'unsure' then  -- ask again once a dead runner's heartbeat would have lapsed
    if not job.unsure_since then redis.call('HSET', K.job(id), 'unsure_since', now) end
    return {'busy', flat}
  end
  local deaths = (job.deliveries or 0) + (seen == 'died' and 1 or 0)
  set.lost_runner, set.unsure_since = cjson.null, cjson.null
  if deaths >= claim.max_deliveries then
    to, outcome, event = STATUS.failed, 'gave-up', 'job.finished'
    set.deliveries = deaths
    set.error = {type = ERROR.worker_lost, detail = 'the worker process died ' .. deaths ..
      ' times while transcribing this recording; it is not tried again automatically ' ..
      '(POST /api/v1/asr/retry/{task_id} to try once more)'}
  else
    -- Under a full Redis this SET is refused before anything is written: the job stays queued
    -- and the worker retries the claim later (pipeline.py).
    redis.call('SET', K.lease(id), claim.token, 'PX', claim.lease_ms)
    set.started_at, set.worker, set.worker_pid, set.runner = now, claim.worker, claim.pid,
      claim.token
    set.attempts, set.deliveries = (job.attempts or 0) + 1, deaths
  end
elseif move.dead_only then  -- an orphan re-queued: its next claim judges the lost run
  set.lost_runner, set.unsure_since = job.runner, cjson.null
end
if to == STATUS.queued and TERMINAL[job.status] then  -- a retry: the same caps as a submit
  local refused = refusal(job.owner, recording_size(id) + move.job_overhead, {
    job_overhead = move.job_overhead, max_active = move.max_active,
    max_active_per_owner = move.max_active_per_owner, budget = move.max_stored_bytes})
  if refused then return {refused, flat} end
end

local retention = move.retention_s
if TERMINAL[to] then
  set.finished_at = now
  if not given(set.processing_s) then
    set.processing_s = job.started_at and (now - job.started_at) or cjson.null
  end
  redis.call('DEL', K.lease(id))
  deactivate(id, job)
  redis.call('ZADD', K.finished, now, id)
  if not job.audio_removed_at then redis.call('ZADD', K.done_audio, now, id) end
  -- Redis TTLs are a backstop: the retention sweep removes finished jobs on time.
  redis.call('EXPIRE', K.job(id), retention + 3600)
  redis.call('EXPIRE', K.audio(id), retention + 3600)
  if given(move.result) then
    redis.call('SET', K.result(id), move.result, 'EX', retention + 3600)
  end
elseif to == STATUS.queued then
  if TERMINAL[job.status] then
    activate(id, job, recording_size(id) + move.job_overhead)
    set.lost_runner, set.unsure_since = cjson.null, cjson.null
  end
  redis.call('DEL', K.lease(id))
  redis.call('ZREM', K.finished, id)
  redis.call('ZREM', K.done_audio, id)
  redis.call('DEL', K.result(id))
end
if not TERMINAL[to] then  -- also a job queued by an older version, which set a TTL then
  redis.call('PERSIST', K.job(id))
  redis.call('PERSIST', K.audio(id))
end

local from = job.status
set.status = to
if given(move.nonce) then set.last_move = move.nonce .. ' ' .. outcome end
local fields = {}
for name, v in pairs(set) do
  fields[#fields + 1] = name
  fields[#fields + 1] = cjson.encode(v)
  if v == cjson.null then v = nil end
  job[name] = v
end
redis.call('HSET', K.job(id), unpack(fields))
if from ~= to then
  redis.call('ZREM', K.status(from), id)
  redis.call('ZADD', K.status(to), job.created_at or now, id)
  if owned(job.owner) then
    redis.call('ZREM', K.owner_status(job.owner, from), id)
    redis.call('ZADD', K.owner_status(job.owner, to), job.created_at or now, id)
  end
end
if to == STATUS.succeeded then count_success(job, now) end
local event_id = emit(event, id, to, move.reason)
if TERMINAL[to] then
  local webhook = queue_webhook(job, id, to, event_id, now, retention + 3600)  -- as the job
  if webhook then redis.call('HSET', K.job(id), 'webhook', cjson.encode(webhook)) end
end
if TERMINAL[to] then prune(move.max_recordings, move.max_stored_bytes, now, 100) end
return {outcome, redis.call('HGETALL', K.job(id))}
