-- A new queued job, its recording, its indexes and (optionally) its Idempotency-Key, at once.
-- ARGV: prefix, id, now, retention_s, max_recordings, stored-audio budget in bytes (0: none),
--       idempotency key ('' for none), fingerprint, idempotency ttl, audio, then the record as
--       field, JSON value pairs, then (last) the limits as JSON: {job_overhead, max_active,
--       max_active_per_owner} (0: no cap).
-- Answers {'created' | 'replayed' | 'conflict' | 'full' | 'queue-full' | 'owner-full', id};
-- the last three store nothing: the active jobs' recordings and records (recording bytes +
-- job_overhead each) would exceed the budget, or there are max_active active jobs in all, or
-- max_active_per_owner of this job's tenant (job.owner).
-- The job and its recording get no TTL: an active job never expires (see activate()).
local id, now = ARGV[2], tonumber(ARGV[3])
local budget, idem, fingerprint, audio = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[10]
local limits = cjson.decode(ARGV[#ARGV])
limits.budget = budget
if idem ~= '' then
  local held = redis.call('GET', idem)
  if held then
    local holder, stored = string.match(held, '^(%S+) (%S+)$')
    if holder and redis.call('EXISTS', jkey(holder)) == 1 then
      if stored ~= fingerprint then return {'conflict', holder} end
      return {'replayed', holder}
    end  -- the key's job is gone: the key is free again
  end
end
local record, job = {}, {}
for i = 11, #ARGV - 1, 2 do
  record[#record + 1] = ARGV[i]
  record[#record + 1] = ARGV[i + 1]
  job[ARGV[i]] = value(ARGV[i + 1])
end
local cost = string.len(audio) + limits.job_overhead
local refused = refusal(job.owner, cost, limits)
if refused then return {refused, id} end
if idem ~= '' then
  redis.call('SET', idem, id .. ' ' .. fingerprint, 'EX', tonumber(ARGV[9]))
end
redis.call('HSET', jkey(id), unpack(record))
store_recording(id, audio)
activate(id, job, cost)
redis.call('ZADD', HISTORY, now, id)
redis.call('ZADD', skey('queued'), now, id)
if owned(job.owner) then
  redis.call('ZADD', okey(job.owner), now, id)
  redis.call('ZADD', okey(job.owner, 'queued'), now, id)
end
emit('job.submitted', id, 'queued')
prune(tonumber(ARGV[5]), budget, now, 100)
return {'created', id}
