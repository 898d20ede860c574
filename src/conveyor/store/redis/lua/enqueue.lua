-- enqueue: append entries to queue tails, remember the queues, wake every server.
-- KEYS[1]   {ns}:queues   SET of known queue names
-- KEYS[2]   {ns}:ready    wake-up channel (a shard channel on Redis 7, declared like a key)
-- KEYS[3..] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload, oldest first
-- ARGV[1]   SPUBLISH or PUBLISH, ARGV[2] "<origin> " (the publishing store's id and a space)
-- then for each queue key, in order: name, count, entry x count
local pub, origin = ARGV[1], ARGV[2]
local a = 3
for k = 3, #KEYS do
  local name = ARGV[a]
  local last = a + 1 + tonumber(ARGV[a + 1])
  rpush_range(KEYS[k], a + 2, last)
  redis.call('SADD', KEYS[1], name)
  redis.call(pub, KEYS[2], origin .. name)
  a = last + 1
end
return 1
