-- set_add: add (or replace, by jid) entries of a sorted set.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:s:<set> ZSET jid by score (equal scores order by jid)
-- KEYS[3] {ns}:d:<set> HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV[3..]: score, jid, data, ... Returns how many entries were given.
local done = replay()
if done then
  return tonumber(done)
end
local n = 0
for i = 3, #ARGV, 3 do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
  n = n + 1
end
remember(tostring(n))
return n
