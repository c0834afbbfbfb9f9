-- Compare-and-extend a running job's lease. ARGV: prefix, id, runner token, lease_ms.
-- 'held': renewed; 'reacquired': it had lapsed (Redis was away) and nobody took the job over;
-- 'lost': another runner or delivery owns the job now, or it is gone.
local id, token, lease_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local holder = redis.call('GET', lkey(id))
if holder == token then
  redis.call('PEXPIRE', lkey(id), lease_ms)
  return 'held'
end
if holder then return 'lost' end
local status, runner = unpack(redis.call('HMGET', jkey(id), 'status', 'runner'))
if value(status) == 'processing' and value(runner) == token then
  redis.call('SET', lkey(id), token, 'PX', lease_ms)
  return 'reacquired'
end
return 'lost'
