-- endings_end: end reservations and return them (store/endings.py); with ARGV[1] "ack" they
-- count as processed, as in ack.lua, and those of a throttled queue free their slot in the
-- queue's slot set and wake the FETCHes waiting for it on every server (limits_reserve.lua).
-- KEYS[1] {ns}:res   HASH jid -> lp(queue) lp(wid) payload
-- KEYS[2] {ns}:exp   ZSET jid by expires_at
-- KEYS[3] {ns}:busy  ZSET jid by reserved_at
-- KEYS[4] {ns}:stats HASH processed, failures, p:<day>, f:<day>
-- KEYS[5] {ns}:ready wake-up channel
-- KEYS[6..] {ns}:tq:<queue> of each throttled queue, in ARGV order
-- ARGV[1] "ack" or "discard", ARGV[2] day, ARGV[3] SPUBLISH or PUBLISH, ARGV[4] "<origin> ",
-- ARGV[5] n, ARGV[6 .. 5+n] throttled queue names, then the jids.
-- Returns a flat array: jid, reservation, expires_at, reserved_at, ...
local n_throttled = tonumber(ARGV[5])
local slots = {}
for t = 1, n_throttled do
  slots[ARGV[5 + t]] = KEYS[5 + t]
end
local out, woke = {}, {}
local n = 0
for i = 6 + n_throttled, #ARGV do
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
    local queue = read_lp(record, 1)
    if slots[queue] then
      redis.call('ZREM', slots[queue], jid)
      woke[queue] = true
    end
    n = n + 1
  end
end
if n > 0 and ARGV[1] == 'ack' then
  redis.call('HINCRBY', KEYS[4], 'processed', n)
  redis.call('HINCRBY', KEYS[4], 'p:' .. ARGV[2], n)
end
for queue, _ in pairs(woke) do
  redis.call(ARGV[3], KEYS[5], ARGV[4] .. queue)
end
return out
