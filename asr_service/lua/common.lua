-- Shared by every lifecycle script (prepended to each, after the prelude scripts.py generates:
-- the key builders K, STATUS/STATUSES/TERMINAL, ERROR, SLOT_S and the other shared numbers).
-- ARGV[1] is the key prefix; the rest is the script's own. A record is a hash whose values are
-- JSON; nil stands for JSON null. Scripts run atomically: a transition, its indexes, lease,
-- TTLs, figures and event are one step.
-- Per job, what each total holds of it (K.recordings_sizes, K.active_costs), so that taking a
-- job out subtracts what was added, even once its keys expired by TTL (never the current
-- STRLEN): a counter of K.recordings_bytes ('stored': all recordings, 'active': of active
-- jobs) cannot drift.
local EVENTS_KEPT = 10000

-- A tenant's own history and status indexes (K.owner_history, K.owner_status), kept in the
-- same step as the global ones so a key's history page is O(page). The anonymous tenant (''
-- or no owner field: no API_KEYS, or a job stored before tenants) has none: it reads the
-- global ones.
-- Whether a spec's optional field was given (JSON null and absent are both 'not given').
local function given(v) return v ~= nil and v ~= cjson.null end

local function owned(owner) return owner ~= nil and owner ~= '' and owner ~= cjson.null end

local function value(raw)
  if not raw then return nil end
  local v = cjson.decode(raw)
  if v == cjson.null then return nil end
  return v
end

-- The record as a table of values, and as the flat HGETALL list (nil when there is none).
local function load(id)
  local flat = redis.call('HGETALL', K.job(id))
  if #flat == 0 then return nil, nil end
  local job = {}
  for i = 1, #flat, 2 do job[flat[i]] = value(flat[i + 1]) end
  return job, flat
end

-- Appends the event to the stream (its id is returned) and wakes the waiters of a job's end.
local function emit(kind, id, status, reason)
  if reason == cjson.null then reason = nil end
  local event_id = redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_KEPT, '*', 'type', kind,
                              'job_id', id, 'status', status or '', 'reason', reason or '')
  if kind == 'job.finished' then
    redis.call('PUBLISH', K.job_finished, id .. ' ' .. status)
  end
  return event_id
end

-- A job with a callback_url that reaches a terminal status (or is deleted while active) gets a
-- webhook delivery: its event, frozen here, and a due time the deliverer (webhooks.py) polls.
-- The delivery's id (the event's stream id) is the webhook-id every retry repeats. The job's
-- own set (webhooks:of:<id>) lists its deliveries, so that removing the job removes them too,
-- and no delivery outlives keep_s (the job's retention). Answers the job's `webhook` field
-- (nil without a callback_url).
local WEBHOOK_KEEP_S = 3 * 86400
local function queue_webhook(job, id, status, event_id, now, keep_s)
  if not job.callback_url then return nil end
  local wid = 'msg_' .. event_id
  local keep = math.min(WEBHOOK_KEEP_S, math.ceil(keep_s or WEBHOOK_KEEP_S))
  local data = {task_id = id, status = status, error = job.error or cjson.null,
                created_at = job.created_at, finished_at = job.finished_at or now,
                duration_s = job.duration_s}
  redis.call('HSET', K.webhook(wid), 'job_id', id, 'type', 'job.' .. status,
             'url', job.callback_url, 'created_at', now, 'data', cjson.encode(data),
             'state', 'pending', 'attempts', 0)
  redis.call('EXPIRE', K.webhook(wid), keep)
  redis.call('SADD', K.webhooks_of(id), wid)
  local of = K.webhooks_of(id)
  if redis.call('TTL', of) < keep then redis.call('EXPIRE', of, keep) end
  redis.call('ZADD', K.webhooks_due, now, wid)
  return {id = wid, type = 'job.' .. status, status = 'pending', attempts = 0}
end

-- A removed job's deliveries go with it (their frozen bodies may hold its transcript), from
-- the due queue and from their destination's waiting line. One in flight finishes its POST;
-- the deliverer then finds it gone. O(deliveries of the job).
local function drop_webhooks(id, job)
  local wids = redis.call('SMEMBERS', K.webhooks_of(id))
  if job and type(job.webhook) == 'table' and job.webhook.id then  -- queued before the set
    wids[#wids + 1] = job.webhook.id
  end
  for _, wid in ipairs(wids) do
    local dest = redis.call('HGET', K.webhook(wid), 'dest')
    if dest then redis.call('ZREM', K.webhooks_wait(dest), wid) end
    redis.call('ZREM', K.webhooks_due, wid)
    redis.call('DEL', K.webhook(wid))
  end
  redis.call('DEL', K.webhooks_of(id))
end

local function observe(name, bounds, v)
  local slot = #bounds + 1
  for i, bound in ipairs(bounds) do
    if v <= bound then slot = i break end
  end
  redis.call('HINCRBY', K.figures, name .. ':' .. slot, 1)
  redis.call('HINCRBYFLOAT', K.figures, name .. ':sum', v)
end

-- Figures follow a job that succeeded: retained totals, cumulative histograms, recent timings.
local function count_success(job, now)
  local audio = job.duration_s or 0
  local e2e = now - (job.queued_at or now)
  local wait = (job.started_at or now) - (job.queued_at or now)
  local proc = job.processing_s or 0
  redis.call('HINCRBYFLOAT', K.figures, 'retained_audio_s', audio)
  if job.diarization then  -- a table ({} or speaker counts): diarize was asked
    redis.call('HINCRBYFLOAT', K.figures, 'retained_diarized_audio_s', audio)
  end
  observe('e2e', E2E_BOUNDS, e2e)
  if audio > 0 then
    redis.call('HINCRBYFLOAT', K.figures, 'retained_rtf_sum', proc / audio)
    redis.call('HINCRBY', K.figures, 'retained_rtf_n', 1)
    observe('rtf', RTF_BOUNDS, proc / audio)
  end
  redis.call('LPUSH', K.recent, cjson.encode({now, wait, proc, e2e, audio}))
  redis.call('LTRIM', K.recent, 0, RECENT_SAMPLES - 1)
  local slot = K.figures_slot(math.floor(now / SLOT_S))
  redis.call('HINCRBY', slot, 'jobs', 1)
  redis.call('HINCRBYFLOAT', slot, 'audio_s', audio)
  redis.call('EXPIRE', slot, SLOT_TTL_S)
end

-- A retained succeeded job leaves (deleted or expired): its share of the retained totals goes.
local function uncount_success(job)
  local audio = job.duration_s or 0
  redis.call('HINCRBYFLOAT', K.figures, 'retained_audio_s', -audio)
  if job.diarization then
    redis.call('HINCRBYFLOAT', K.figures, 'retained_diarized_audio_s', -audio)
  end
  if audio > 0 and job.processing_s then
    redis.call('HINCRBYFLOAT', K.figures, 'retained_rtf_sum', -job.processing_s / audio)
    redis.call('HINCRBY', K.figures, 'retained_rtf_n', -1)
  end
end

local function bytes(field)
  return tonumber(redis.call('HGET', K.recordings_bytes, field) or '0')
end

local function add_bytes(field, delta)
  -- Lua 5.1 writes a negated zero as "-0", which HINCRBY refuses.
  if delta ~= 0 then redis.call('HINCRBY', K.recordings_bytes, field, delta) end
end

local function store_recording(id, audio)
  redis.call('SET', K.audio(id), audio)
  redis.call('HSET', K.recordings_sizes, id, string.len(audio))
  add_bytes('stored', string.len(audio))
end

-- The size stored with the recording (its STRLEN for one stored before sizes were kept).
local function recording_size(id)
  return tonumber(redis.call('HGET', K.recordings_sizes, id) or redis.call('STRLEN', K.audio(id)))
end

local function drop_recording(id)
  add_bytes('stored', -recording_size(id))
  redis.call('HDEL', K.recordings_sizes, id)
  redis.call('DEL', K.audio(id))
end

-- How many jobs are queued or running.
local function active_count()
  return redis.call('ZCARD', K.status(STATUS.queued)) +
    redis.call('ZCARD', K.status(STATUS.processing))
end

-- What a new or re-queued job may not exceed (limits: job_overhead, max_active,
-- max_active_per_owner, budget; 0 = no cap): nil when it fits, else why not
-- ('queue-full' | 'owner-full' | 'full').
local function refusal(owner, cost, limits)
  if limits.max_active > 0 and
      active_count() >= limits.max_active then
    return 'queue-full'
  end
  if limits.max_active_per_owner > 0 and
      redis.call('ZCARD', K.owner_active(owner or '')) >= limits.max_active_per_owner then
    return 'owner-full'
  end
  if limits.budget > 0 and bytes('active') + cost > limits.budget then return 'full' end
  return nil
end

-- A job becomes active (queued, or queued again by a retry): it holds `cost` bytes of the
-- budget and a place among its tenant's active jobs. Active jobs never expire (PERSIST): only
-- a terminal status gives them a TTL.
local function activate(id, job, cost)
  if redis.call('HSETNX', K.active_costs, id, cost) == 1 then add_bytes('active', cost) end
  redis.call('ZADD', K.owner_active(job.owner or ''), job.created_at or 0, id)
  redis.call('PERSIST', K.job(id))
  redis.call('PERSIST', K.audio(id))
end

-- A job stops being active (finished or deleted): it gives back what activate() took.
local function deactivate(id, job)
  local cost = redis.call('HGET', K.active_costs, id)
  if cost then
    redis.call('HDEL', K.active_costs, id)
    add_bytes('active', -tonumber(cost))
  else  -- queued before costs were kept per job: it held its recording's size
    add_bytes('active', -redis.call('STRLEN', K.audio(id)))
  end
  redis.call('ZREM', K.owner_active(job.owner or ''), id)
end

-- Recordings beyond max_recordings, or beyond budget bytes (0: no budget), go, oldest finished
-- first; an active job's never does. Costs O(recordings removed): they have their own index.
local function prune(max_recordings, budget, now, limit)
  local removed = 0
  while removed < limit do
    local done = redis.call('ZCARD', K.done_audio)
    if done == 0 then break end
    local active = active_count()
    if active + done <= max_recordings and (budget <= 0 or bytes('stored') <= budget) then
      break
    end
    local id = redis.call('ZRANGE', K.done_audio, 0, 0)[1]
    drop_recording(id)
    redis.call('ZREM', K.done_audio, id)
    if redis.call('EXISTS', K.job(id)) == 1 then
      redis.call('HSET', K.job(id), 'audio_removed_at', cjson.encode(now))
    end
    removed = removed + 1
  end
  return removed
end

-- Everything of one job goes, from every index; the figures forget a succeeded one.
local function remove(id)
  local job, flat = load(id)
  if job and (job.status == STATUS.queued or job.status == STATUS.processing) then
    deactivate(id, job)
  end
  drop_recording(id)
  redis.call('DEL', K.job(id), K.result(id), K.lease(id))
  redis.call('ZREM', K.history, id)
  redis.call('ZREM', K.finished, id)
  redis.call('ZREM', K.done_audio, id)
  for _, status in ipairs(STATUSES) do redis.call('ZREM', K.status(status), id) end
  if job and owned(job.owner) then
    redis.call('ZREM', K.owner_history(job.owner), id)
    for _, status in ipairs(STATUSES) do
      redis.call('ZREM', K.owner_status(job.owner, status), id)
    end
  end
  if job and job.status == STATUS.succeeded then uncount_success(job) end
  drop_webhooks(id, job)
  return job, flat
end
