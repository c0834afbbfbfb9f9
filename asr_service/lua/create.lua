-- A new queued job, its recording, its indexes and (optionally) its Idempotency-Key, at once.
-- ARGV: prefix, id, now, retention_s, max_recordings, stored-audio budget in bytes (0: none),
--       idempotency key ('' for none), fingerprint, idempotency ttl, audio, then the record as
--       field, JSON value pairs.
-- Answers {'created' | 'replayed' | 'conflict' | 'full', id}; 'full' stores nothing: the
-- recordings of active jobs alone would exceed the budget.
local id, now, retention = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local budget, idem, fingerprint, audio = tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[10]
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
if budget > 0 and bytes('active') + string.len(audio) > budget then return {'full', id} end
if idem ~= '' then
  redis.call('SET', idem, id .. ' ' .. fingerprint, 'EX', tonumber(ARGV[9]))
end
local record, owner = {}, nil
for i = 11, #ARGV, 2 do
  record[#record + 1] = ARGV[i]
  record[#record + 1] = ARGV[i + 1]
  if ARGV[i] == 'owner' then owner = value(ARGV[i + 1]) end
end
redis.call('HSET', jkey(id), unpack(record))
redis.call('EXPIRE', jkey(id), retention)
redis.call('SET', akey(id), audio, 'EX', retention)
add_bytes('stored', string.len(audio))
add_bytes('active', string.len(audio))
redis.call('ZADD', HISTORY, now, id)
redis.call('ZADD', skey('queued'), now, id)
if owned(owner) then
  redis.call('ZADD', okey(owner), now, id)
  redis.call('ZADD', okey(owner, 'queued'), now, id)
end
emit('job.submitted', id, 'queued')
prune(tonumber(ARGV[5]), budget, now, 100)
return {'created', id}
