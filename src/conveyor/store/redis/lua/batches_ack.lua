-- batches_ack: ack.lua for the jids without an unfinished mark; the marked ones are left
-- alone and returned, for batches_end (store/batches.py ack_unmarked).
-- KEYS[1] {ns}:marks  KEYS[2] {ns}:res  KEYS[3] {ns}:exp  KEYS[4] {ns}:busy  KEYS[5] {ns}:stats
-- ARGV[1] day (YYYY-MM-DD), ARGV[2..] jids.
-- Returns {how many reservations ended, jid, mark, jid, mark, ...}.
local out = {0}
local n = 0
for i = 2, #ARGV do
  local jid = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], jid)
  local state = raw and read_lp(raw, 1)
  if state == 'enqueued' or state == 'failed' or state == 'waiting' then
    out[#out + 1] = jid
    out[#out + 1] = raw
  elseif redis.call('HDEL', KEYS[2], jid) == 1 then
    redis.call('ZREM', KEYS[3], jid)
    redis.call('ZREM', KEYS[4], jid)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HINCRBY', KEYS[5], 'processed', n)
  redis.call('HINCRBY', KEYS[5], 'p:' .. ARGV[1], n)
end
out[1] = n
return out
