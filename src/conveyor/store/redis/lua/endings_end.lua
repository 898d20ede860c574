-- endings_end: end reservations and return them (store/endings.py); with ARGV[1] "ack" they
-- count as processed, as in ack.lua.
-- KEYS[1] {ns}:res   HASH jid -> lp(queue) lp(wid) payload
-- KEYS[2] {ns}:exp   ZSET jid by expires_at
-- KEYS[3] {ns}:busy  ZSET jid by reserved_at
-- KEYS[4] {ns}:stats HASH processed, failures, p:<day>, f:<day>
-- ARGV[1] "ack" or "discard", ARGV[2] day, ARGV[3..] jids.
-- Returns a flat array: jid, reservation, expires_at, reserved_at, ...
local out = {}
local n = 0
for i = 3, #ARGV do
  local jid = ARGV[i]
  local record = redis.call('HGET', KEYS[1], jid)
  if record then
    out[#out + 1] = jid
    out[#out + 1] = record
    out[#out + 1] = redis.call('ZSCORE', KEYS[2], jid)
    out[#out + 1] = redis.call('ZSCORE', KEYS[3], jid)
    redis.call('HDEL', KEYS[1], jid)
    redis.call('ZREM', KEYS[2], jid)
    redis.call('ZREM', KEYS[3], jid)
    n = n + 1
  end
end
if n > 0 and ARGV[1] == 'ack' then
  redis.call('HINCRBY', KEYS[4], 'processed', n)
  redis.call('HINCRBY', KEYS[4], 'p:' .. ARGV[2], n)
end
return out
