#!lua flags=allow-oom
-- Delete one job for good, or expire the retained jobs that finished before a cutoff.
-- allow-oom: both free memory, so they must run while Redis is full (noeviction).
-- ARGV: prefix, 'delete', id, now, retention_s[, owner] -> {'deleted', record as a flat list} |
--         {'missing'}; a job deleted while active queues a job.cancelled webhook (no
--         transcript), kept at most retention_s; with an owner, another tenant's job is
--         'missing' and stays
--       prefix, 'expire', cutoff, limit -> number of jobs removed
-- Both remove the job's webhook deliveries with it (common.lua: drop_webhooks).
-- A late write cannot bring a removed job back: every write to a job checks its record.
if ARGV[2] == 'delete' then
  if ARGV[6] and (value(redis.call('HGET', jkey(ARGV[3]), 'owner')) or '') ~= ARGV[6] then
    return {'missing'}
  end
  local job, flat = remove(ARGV[3])
  if not job then return {'missing'} end
  local event_id = emit('job.deleted', ARGV[3], job.status)
  redis.call('PUBLISH', P .. 'job.finished', ARGV[3] .. ' deleted')  -- its waiters answer 404
  if job.status == 'queued' or job.status == 'processing' then  -- cancelled by its deletion
    queue_webhook(job, ARGV[3], 'cancelled', event_id, tonumber(ARGV[4]), tonumber(ARGV[5]))
  end
  return {'deleted', flat}
end
local ids = redis.call('ZRANGEBYSCORE', FINISHED, '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do remove(id) end
return #ids
