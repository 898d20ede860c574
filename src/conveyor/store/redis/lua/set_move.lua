-- set_move: move entries still in one sorted set (same jid AND score) to another with a new score.
-- KEYS[1] {ns}:s:<source> ZSET   KEYS[2] {ns}:d:<source> HASH
-- KEYS[3] {ns}:s:<target> ZSET   KEYS[4] {ns}:d:<target> HASH
-- ARGV[1] new score, then jid, score pairs. Returns how many moved.
local n = 0
for i = 2, #ARGV, 2 do
  local jid = ARGV[i]
  if same_score(redis.call('ZSCORE', KEYS[1], jid), ARGV[i + 1]) then
    local data = redis.call('HGET', KEYS[2], jid)
    redis.call('ZREM', KEYS[1], jid)
    redis.call('HDEL', KEYS[2], jid)
    redis.call('ZADD', KEYS[3], ARGV[1], jid)
    redis.call('HSET', KEYS[4], jid, data)
    n = n + 1
  end
end
return n
