-- Compare-and-extend a running job's lease. ARGV: prefix, id, {token, lease_ms}.
-- 'held': renewed; 'reacquired': it had lapsed (Redis was away) and nobody took the job over;
-- 'lost': another runner or delivery owns the job now; 'done': the job finished or is gone
-- (nothing to stop: its own end, or a DELETE that stops the run itself).
local id, spec = ARGV[2], cjson.decode(ARGV[3])
local token, lease_ms = spec.token, spec.lease_ms
local holder = redis.call('GET', K.lease(id))
if holder == token then
  redis.call('PEXPIRE', K.lease(id), lease_ms)
  return 'held'
end
if holder then return 'lost' end
local status, runner = unpack(redis.call('HMGET', K.job(id), 'status', 'runner'))
status, runner = value(status), value(runner)
if status == STATUS.processing and runner == token then
  redis.call('SET', K.lease(id), token, 'PX', lease_ms)
  return 'reacquired'
end
if status == nil or TERMINAL[status] then return 'done' end
return 'lost'
