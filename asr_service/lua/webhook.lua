-- Webhook deliveries (queued by the lifecycle scripts: common.lua's queue_webhook).
-- ARGV: prefix, op, spec (JSON); every spec has `now`.
--       'claim', {now, token, lease_s, limit, per_destination} -> {id, destination, ...}:
--         due deliveries leased until now + lease_s (a deliverer that dies mid-POST leaves them
--         due again: at-least-once), at most per_destination in flight to one
--         scheme://host:port; the others of a saturated destination wait in its line (no
--         attempt is counted). A claim sent again with its token gets the first answer: the
--         link may drop after Redis ran it (redis-py then resends it), and the deliveries it
--         leased would otherwise wait out their lease unsent.
--       'body', {now, id, body} -> the delivery's body: the first one stored wins, so every
--         retry sends the same bytes; nil when the delivery is gone (then unqueued)
--       'done', {now, id, outcome: {state, attempts, last_error, next_at}, destination} -> 1,
--         or 0 when the delivery is gone; the job's `webhook` field follows if it still names
--         this delivery. Frees the destination's slot either way.
--       'release', {now, id, destination, again_at} -> frees the slot of a claim that sent
--         nothing; with again_at the delivery is due then, not when its lease would end
-- Under maxmemory Redis (7) refuses a script at its first write that may grow memory (ZADD,
-- HSET; not ZREM), before anything changed; once a script wrote, it runs to its end. Still, a
-- delivery moves by adding it to its new place before removing it from the old one, so that a
-- refusal anywhere would leave it where it was, never nowhere.
-- Key names come from the builders prepended to it (K, keys.lua_builders()).
-- K.webhooks_waiting: destinations with waiting deliveries, by when a slot frees for sure (a
-- lease runs out): the safety net when no `done` comes to promote them (a deliverer killed
-- mid-POST).
local op, spec = ARGV[2], cjson.decode(ARGV[3])
local now = spec.now
local DUE, WAITING = K.webhooks_due, K.webhooks_waiting
local SCAN = 200  -- due entries one claim looks at, at most: the script stays short
local busy, line = K.webhooks_busy, K.webhooks_wait  -- id -> lease end; id -> due time

-- scheme://host:port of a URL the SSRF guard accepted (http/https, no credentials).
local function destination(url)
  local scheme, authority = string.match(string.lower(url), '^(%a[%w+.-]*)://([^/?#]*)')
  if not scheme then return 'other' end
  if string.match(authority, ':%d+$') then return scheme .. '://' .. authority end
  authority = string.gsub(authority, ':$', '')  -- "host:" means the default port
  return scheme .. '://' .. authority .. (scheme == 'https' and ':443' or ':80')
end

local function in_flight(dest)
  redis.call('ZREMRANGEBYSCORE', busy(dest), '-inf', now)  -- leases that ran out
  return redis.call('ZCARD', busy(dest))
end

-- Up to n of dest's waiting deliveries go back to the due queue, oldest first, at their own
-- due time (they keep their turn); the next claim leases them if the destination has room.
local function promote(dest, n)
  for _ = 1, n do
    local head = redis.call('ZRANGE', line(dest), 0, 0, 'WITHSCORES')
    if #head == 0 then break end
    redis.call('ZADD', DUE, math.min(tonumber(head[2]), now), head[1])
    redis.call('ZREM', line(dest), head[1])
  end
  if redis.call('EXISTS', line(dest)) == 0 then redis.call('ZREM', WAITING, dest) end
end

if op == 'claim' then
  local lease_s, limit, per_dest = spec.lease_s, spec.limit, spec.per_destination or 2
  local memo = spec.token and K.webhooks_claim(spec.token)
  if memo and redis.call('EXISTS', memo) == 1 then return redis.call('LRANGE', memo, 0, -1) end
  for _, dest in ipairs(redis.call('ZRANGEBYSCORE', WAITING, '-inf', now, 'LIMIT', 0, 10)) do
    promote(dest, per_dest - in_flight(dest))
    if redis.call('EXISTS', line(dest)) == 1 then
      redis.call('ZADD', WAITING, now + lease_s, dest)
    end
  end
  local out, taken, seen = {}, 0, 0
  while taken < limit and seen < SCAN do
    local due = redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'WITHSCORES', 'LIMIT', 0,
                           limit - taken)
    if #due == 0 then break end
    for i = 1, #due, 2 do
      local id, key = due[i], K.webhook(due[i])
      seen = seen + 1
      local dest = redis.call('HGET', key, 'dest')
      local url = dest or redis.call('HGET', key, 'url')
      if url and not dest then
        dest = destination(url)
        redis.call('HSET', key, 'dest', dest)
      end
      if not dest then  -- expired: nothing to send
        redis.call('ZREM', DUE, id)
      elseif in_flight(dest) < per_dest then
        redis.call('ZADD', DUE, now + lease_s, id)
        redis.call('ZADD', busy(dest), now + lease_s, id)
        redis.call('EXPIRE', busy(dest), math.ceil(lease_s) + 1)
        taken = taken + 1
        out[#out + 1] = id
        out[#out + 1] = dest
      else  -- its destination has its share in flight: wait in line, out of everyone's way
        redis.call('ZADD', line(dest), due[i + 1], id)
        redis.call('ZREM', DUE, id)
        local first = redis.call('ZRANGE', busy(dest), 0, 0, 'WITHSCORES')
        redis.call('ZADD', WAITING, 'LT', first[2], dest)  -- adds, or keeps the earliest
      end
    end
  end
  if memo and #out > 0 then
    redis.call('RPUSH', memo, unpack(out))
    redis.call('EXPIRE', memo, math.ceil(lease_s))
  end
  return out
end
local id = spec.id
if op == 'release' or op == 'done' then
  local dest = spec.destination
  -- Its slot frees: the next in line goes (once: a resend finds the slot freed already).
  if dest and dest ~= cjson.null and dest ~= '' and redis.call('ZREM', busy(dest), id) == 1 then
    promote(dest, 1)
  end
  if op == 'release' then
    if spec.again_at and spec.again_at ~= cjson.null then
      redis.call('ZADD', DUE, 'XX', spec.again_at, id)
    end
    return 1
  end
end
local key = K.webhook(id)
local job_id = redis.call('HGET', key, 'job_id')
if not job_id then  -- expired (or never whole): nothing to send, nothing to record
  redis.call('ZREM', DUE, id)
  return op == 'done' and 0 or false
end
if op == 'body' then
  redis.call('HSETNX', key, 'body', spec.body)
  return redis.call('HGET', key, 'body')
end
local outcome = spec.outcome
local state, next_at, err = outcome.state, outcome.next_at, outcome.last_error  -- '' for none
redis.call('HSET', key, 'state', state, 'attempts', outcome.attempts, 'last_attempt_at', now,
           'last_error', err)
if state == 'delivered' then redis.call('HSET', key, 'delivered_at', now) end
if state == 'pending' then
  redis.call('ZADD', DUE, next_at, id)
else
  redis.call('ZREM', DUE, id)
end
local jkey = K.job(job_id)
local raw = redis.call('HGET', jkey, 'webhook')
if raw then  -- the job may be gone (deleted, expired): then only the delivery records it
  local webhook = cjson.decode(raw)
  if type(webhook) == 'table' and webhook.id == id then
    webhook.status, webhook.attempts = state, outcome.attempts
    webhook.last_error, webhook.last_attempt_at = (err ~= '') and err or cjson.null, now
    webhook.next_attempt_at = (state == 'pending') and next_at or cjson.null
    redis.call('HSET', jkey, 'webhook', cjson.encode(webhook))
  end
end
return 1
