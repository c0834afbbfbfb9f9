-- Compare-and-extend a running job's lease. ARGV: prefix, id, runner token, lease_ms.
-- 'held': renewed; 'reacquired': it had lapsed (Redis was away) and nobody took the job over;
-- 'lost': another runner or delivery owns the job now; 'done': the job finished or is gone
-- (nothing to stop: its own end, or a DELETE that stops the run itself).
local id, token, lease_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local holder = redis.call('GET', lkey(id))
if holder == token then
  redis.call('PEXPIRE', lkey(id), lease_ms)
  return 'held'
end
if holder then return 'lost' end
local status, runner = unpack(redis.call('HMGET', jkey(id), 'status', 'runner'))
status, runner = value(status), value(runner)
if status == 'processing' and runner == token then
  redis.call('SET', lkey(id), token, 'PX', lease_ms)
  return 'reacquired'
end
if status == nil or TERMINAL[status] then return 'done' end
return 'lost'
