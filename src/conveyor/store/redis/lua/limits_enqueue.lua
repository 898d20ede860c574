-- limits_enqueue: enqueue.lua for jobs of bounded queues: a queue takes jobs, in order, only
-- while it holds fewer than its bound (store/limits.py).
-- KEYS[1]   {ns}:op:<token> this call's token (_lib.lua): how many each queue took
-- KEYS[2]   {ns}:queues   SET of known queue names
-- KEYS[3]   {ns}:ready    wake-up channel
-- KEYS[4..] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload, oldest first
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] SPUBLISH or PUBLISH, ARGV[4] "<origin> "
-- then for each queue key, in order: name, bound (-1: none), count, entry x count
-- Returns, per queue, how many of its entries were stored (the first ones).
local done = replay()
if done then
  return unpack_lp(done)
end
local pub, origin = ARGV[3], ARGV[4]
local stored = {}
local a = 5
for k = 4, #KEYS do
  local name, bound, count = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local take = count
  if bound >= 0 then
    take = math.max(0, math.min(count, bound - redis.call('LLEN', KEYS[k])))
  end
  if take > 0 then
    rpush_range(KEYS[k], a + 3, a + 2 + take)
    redis.call('SADD', KEYS[2], name)
    redis.call(pub, KEYS[3], origin .. name)
  end
  stored[#stored + 1] = tostring(take)
  a = a + 3 + count
end
remember(pack(stored))
return stored
