#!lua flags=allow-oom
-- Delete one job for good, or expire the retained jobs that finished before a cutoff.
-- allow-oom: both free memory, so they must run while Redis is full (noeviction).
-- ARGV: prefix, 'delete', {id, now, retention_s, owner} -> {'deleted', record as a flat list}
--         | {'missing'}; a job deleted while active queues a job.cancelled webhook (no
--         transcript), kept at most retention_s; with an owner (not null), another tenant's
--         job is 'missing' and stays
--       prefix, 'expire', {cutoff, limit} -> number of jobs removed
-- Both remove the job's webhook deliveries with it (common.lua: drop_webhooks).
-- A late write cannot bring a removed job back: every write to a job checks its record.
local spec = cjson.decode(ARGV[3])
if ARGV[2] == 'delete' then
  local id = spec.id
  if given(spec.owner) and (value(redis.call('HGET', K.job(id), 'owner')) or '') ~= spec.owner
  then
    return {'missing'}
  end
  local job, flat = remove(id)
  if not job then return {'missing'} end
  local event_id = emit('job.deleted', id, job.status)
  redis.call('PUBLISH', K.job_finished, id .. ' deleted')  -- its waiters answer 404
  if not TERMINAL[job.status] then  -- an active job is cancelled by its deletion
    queue_webhook(job, id, STATUS.cancelled, event_id, spec.now, spec.retention_s)
  end
  return {'deleted', flat}
end
local ids = redis.call('ZRANGEBYSCORE', K.finished, '-inf', spec.cutoff, 'LIMIT', 0, spec.limit)
for _, id in ipairs(ids) do remove(id) end
return #ids
