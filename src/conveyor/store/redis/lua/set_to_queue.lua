-- set_to_queue: move entries still in a sorted set (same jid AND score) into queues.
-- Two servers promoting the same entry therefore enqueue it once.
-- KEYS[1]   {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2]   {ns}:s:<set>  ZSET jid by score
-- KEYS[3]   {ns}:d:<set>  HASH jid -> set data
-- KEYS[4]   {ns}:queues   SET of known queue names
-- KEYS[5]   {ns}:ready    wake-up channel
-- KEYS[6..] {ns}:q:<name> LISTs the moves enqueue into
-- ARGV[3] SPUBLISH or PUBLISH, ARGV[4] "<origin> ", then per move: jid, score,
-- queue key index (6..), name, entry
-- Returns how many moved.
local done = replay()
if done then
  return tonumber(done)
end
local n = 0
local woke = {}
for i = 5, #ARGV, 5 do
  local jid = ARGV[i]
  if same_score(redis.call('ZSCORE', KEYS[2], jid), ARGV[i + 1]) then
    redis.call('ZREM', KEYS[2], jid)
    redis.call('HDEL', KEYS[3], jid)
    redis.call('RPUSH', KEYS[tonumber(ARGV[i + 2])], ARGV[i + 4])
    redis.call('SADD', KEYS[4], ARGV[i + 3])
    woke[ARGV[i + 3]] = true
    n = n + 1
  end
end
for name, _ in pairs(woke) do
  redis.call(ARGV[3], KEYS[5], ARGV[4] .. name)
end
remember(tostring(n))
return n
