-- set_move: move entries still in one sorted set (same jid AND score) to another with a new score.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:s:<source> ZSET   KEYS[3] {ns}:d:<source> HASH
-- KEYS[4] {ns}:s:<target> ZSET   KEYS[5] {ns}:d:<target> HASH
-- ARGV[3] new score, then jid, score pairs. Returns how many moved.
local done = replay()
if done then
  return tonumber(done)
end
local n = 0
for i = 4, #ARGV, 2 do
  local jid = ARGV[i]
  if same_score(redis.call('ZSCORE', KEYS[2], jid), ARGV[i + 1]) then
    local data = redis.call('HGET', KEYS[3], jid)
    redis.call('ZREM', KEYS[2], jid)
    redis.call('HDEL', KEYS[3], jid)
    redis.call('ZADD', KEYS[4], ARGV[3], jid)
    redis.call('HSET', KEYS[5], jid, data)
    n = n + 1
  end
end
remember(tostring(n))
return n
