-- A new queued job, its recording, its indexes and (optionally) its Idempotency-Key, at once.
-- ARGV: prefix, id, spec (JSON), audio (the recording's bytes: binary, so not in the JSON).
--   now              the job's created_at
--   record           the job's fields: name -> JSON-encoded value (encoded by Python, so
--                    floats keep every digit)
--   idempotency      {key, fingerprint, ttl_s}, or null
--   max_recordings, max_stored_bytes (the stored-audio budget in bytes, 0: none)
--   job_overhead, max_active, max_active_per_owner: the caps (0: no cap)
-- Answers {'created' | 'replayed' | 'conflict' | 'full' | 'queue-full' | 'owner-full', id};
-- the last three store nothing: the active jobs' recordings and records (recording bytes +
-- job_overhead each) would exceed the budget, or there are max_active active jobs in all, or
-- max_active_per_owner of this job's tenant (job.owner).
-- The job and its recording get no TTL: an active job never expires (see activate()).
local id, spec, audio = ARGV[2], cjson.decode(ARGV[3]), ARGV[4]
local now, idem = spec.now, spec.idempotency
-- Every submit draws a new id, so a job already there is this create sent again (redis-py
-- resends a command whose answer a dropped link or a timeout lost): answered as the first
-- time, nothing stored or counted twice.
if redis.call('EXISTS', K.job(id)) == 1 then return {'created', id} end
if given(idem) then
  local held = redis.call('GET', idem.key)
  if held then
    local holder, stored = string.match(held, '^(%S+) (%S+)$')
    if holder and redis.call('EXISTS', K.job(holder)) == 1 then
      if stored ~= idem.fingerprint then return {'conflict', holder} end
      return {'replayed', holder}
    end  -- the key's job is gone: the key is free again
  end
end
local record, job = {}, {}
for name, raw in pairs(spec.record) do
  record[#record + 1] = name
  record[#record + 1] = raw
  job[name] = value(raw)
end
local cost = string.len(audio) + spec.job_overhead
local refused = refusal(job.owner, cost, {
  job_overhead = spec.job_overhead, max_active = spec.max_active,
  max_active_per_owner = spec.max_active_per_owner, budget = spec.max_stored_bytes})
if refused then return {refused, id} end
if given(idem) then
  redis.call('SET', idem.key, id .. ' ' .. idem.fingerprint, 'EX', idem.ttl_s)
end
redis.call('HSET', K.job(id), unpack(record))
store_recording(id, audio)
activate(id, job, cost)
redis.call('ZADD', K.history, now, id)
redis.call('ZADD', K.status(STATUS.queued), now, id)
if owned(job.owner) then
  redis.call('ZADD', K.owner_history(job.owner), now, id)
  redis.call('ZADD', K.owner_status(job.owner, STATUS.queued), now, id)
end
emit('job.submitted', id, STATUS.queued)
prune(spec.max_recordings, spec.max_stored_bytes, now, 100)
return {'created', id}
