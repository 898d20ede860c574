-- enqueue: append entries to queue tails, remember the queues, wake every server.
-- KEYS[1]   {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2]   {ns}:queues   SET of known queue names
-- KEYS[3]   {ns}:ready    wake-up channel (a shard channel on Redis 7, declared like a key)
-- KEYS[4..] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload, oldest first
-- ARGV[3]   SPUBLISH or PUBLISH, ARGV[4] "<origin> " (the publishing store's id and a space)
-- then for each queue key, in order: name, count, entry x count
if replay() then
  return 1
end
local pub, origin = ARGV[3], ARGV[4]
local a = 5
for k = 4, #KEYS do
  local name = ARGV[a]
  local last = a + 1 + tonumber(ARGV[a + 1])
  rpush_range(KEYS[k], a + 2, last)
  redis.call('SADD', KEYS[2], name)
  redis.call(pub, KEYS[3], origin .. name)
  a = last + 1
end
remember('1')
return 1
