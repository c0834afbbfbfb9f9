-- A new queued job, its recording, its indexes and (optionally) its Idempotency-Key, at once.
-- ARGV: prefix, id, now, retention_s, max_recordings, idempotency key ('' for none),
--       fingerprint, idempotency ttl, audio, then the record as field, JSON value pairs.
local id, now, retention = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local idem, fingerprint = ARGV[6], ARGV[7]
if idem ~= '' then
  local held = redis.call('GET', idem)
  if held then
    local holder, stored = string.match(held, '^(%S+) (%S+)$')
    if holder and redis.call('EXISTS', jkey(holder)) == 1 then
      if stored ~= fingerprint then return {'conflict', holder} end
      return {'replayed', holder}
    end  -- the key's job is gone: the key is free again
  end
  redis.call('SET', idem, id .. ' ' .. fingerprint, 'EX', tonumber(ARGV[8]))
end
local record = {}
for i = 10, #ARGV, 2 do
  record[#record + 1] = ARGV[i]
  record[#record + 1] = ARGV[i + 1]
end
redis.call('HSET', jkey(id), unpack(record))
redis.call('EXPIRE', jkey(id), retention)
redis.call('SET', akey(id), ARGV[9], 'EX', retention)
redis.call('ZADD', HISTORY, now, id)
redis.call('ZADD', skey('queued'), now, id)
emit('job.submitted', id, 'queued')
prune(tonumber(ARGV[5]), now, 100)
return {'created', id}
