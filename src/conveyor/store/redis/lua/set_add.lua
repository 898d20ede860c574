-- set_add: add (or replace, by jid) entries of a sorted set.
-- KEYS[1] {ns}:s:<set> ZSET jid by score (equal scores order by jid)
-- KEYS[2] {ns}:d:<set> HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV: score, jid, data, ... Returns how many entries were given.
local n = 0
for i = 1, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2])
  n = n + 1
end
return n
