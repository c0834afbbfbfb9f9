-- Webhook deliveries (queued by the lifecycle scripts: common.lua's queue_webhook).
-- ARGV: prefix, 'claim', now, lease_s, limit -> ids now due, leased until now + lease_s (a
--         deliverer that dies mid-POST leaves them due again: at-least-once)
--       prefix, 'body', now, id, body -> the delivery's body: the first one stored wins, so
--         every retry sends the same bytes; nil when the delivery is gone (then unqueued)
--       prefix, 'done', now, id, outcome JSON {state, attempts, last_error, next_at}
--         -> 1, or 0 when the delivery is gone; the job's `webhook` field follows if it still
--         names this delivery.
local P, op, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local DUE = P .. 'webhooks:due'
if op == 'claim' then
  local ids = redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
  for _, id in ipairs(ids) do redis.call('ZADD', DUE, now + tonumber(ARGV[4]), id) end
  return ids
end
local id = ARGV[4]
local key = P .. 'webhook:' .. id
local job_id = redis.call('HGET', key, 'job_id')
if not job_id then  -- expired (or never whole): nothing to send, nothing to record
  redis.call('ZREM', DUE, id)
  return op == 'done' and 0 or false
end
if op == 'body' then
  redis.call('HSETNX', key, 'body', ARGV[5])
  return redis.call('HGET', key, 'body')
end
local outcome = cjson.decode(ARGV[5])
local state, next_at, err = outcome.state, outcome.next_at, outcome.last_error  -- '' for none
redis.call('HSET', key, 'state', state, 'attempts', outcome.attempts, 'last_attempt_at', now,
           'last_error', err)
if state == 'delivered' then redis.call('HSET', key, 'delivered_at', now) end
if state == 'pending' then
  redis.call('ZADD', DUE, next_at, id)
else
  redis.call('ZREM', DUE, id)
end
local jkey = P .. 'job:' .. job_id
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
