-- set_remove: delete entries still present (same jid AND score), or purge due entries.
-- KEYS[1] {ns}:s:<set> ZSET jid by score
-- KEYS[2] {ns}:d:<set> HASH jid -> set data
-- ARGV[1] mode:
--   "exact" then jid, score pairs
--   "purge" ARGV[2] before, ARGV[3] limit   (lowest score first)
--   "clear"                                 (everything)
-- Returns how many were deleted.
local mode = ARGV[1]
if mode == 'clear' then
  local n = redis.call('ZCARD', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2])
  return n
end
local n = 0
if mode == 'purge' then
  local jids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
  for _, jid in ipairs(jids) do
    redis.call('ZREM', KEYS[1], jid)
    redis.call('HDEL', KEYS[2], jid)
    n = n + 1
  end
  return n
end
for i = 2, #ARGV, 2 do
  if same_score(redis.call('ZSCORE', KEYS[1], ARGV[i]), ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
