-- set_to_queue: move entries still in a sorted set (same jid AND score) into queues.
-- Two servers promoting the same entry therefore enqueue it once.
-- KEYS[1]   {ns}:s:<set>  ZSET jid by score
-- KEYS[2]   {ns}:d:<set>  HASH jid -> set data
-- KEYS[3]   {ns}:queues   SET of known queue names
-- KEYS[4]   {ns}:ready    wake-up channel
-- KEYS[5..] {ns}:q:<name> LISTs the moves enqueue into
-- ARGV[1] SPUBLISH or PUBLISH, ARGV[2] "<origin> ", then per move: jid, score,
-- queue key index (5..), name, entry
-- Returns how many moved.
local n = 0
local woke = {}
for i = 3, #ARGV, 5 do
  local jid = ARGV[i]
  if same_score(redis.call('ZSCORE', KEYS[1], jid), ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], jid)
    redis.call('HDEL', KEYS[2], jid)
    redis.call('RPUSH', KEYS[tonumber(ARGV[i + 2])], ARGV[i + 4])
    redis.call('SADD', KEYS[3], ARGV[i + 3])
    woke[ARGV[i + 3]] = true
    n = n + 1
  end
end
for name, _ in pairs(woke) do
  redis.call(ARGV[1], KEYS[4], ARGV[2] .. name)
end
return n
