-- set_remove: delete entries still present (same jid AND score), or purge due entries.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:s:<set> ZSET jid by score
-- KEYS[3] {ns}:d:<set> HASH jid -> set data
-- ARGV[3] mode:
--   "exact" then jid, score pairs
--   "purge" ARGV[4] before, ARGV[5] limit   (lowest score first)
--   "clear"                                 (everything)
-- Returns how many were deleted.
local done = replay()
if done then
  return tonumber(done)
end
local mode = ARGV[3]
local n = 0
if mode == 'clear' then
  n = redis.call('ZCARD', KEYS[2])
  redis.call('DEL', KEYS[2], KEYS[3])
elseif mode == 'purge' then
  local jids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
  for _, jid in ipairs(jids) do
    redis.call('ZREM', KEYS[2], jid)
    redis.call('HDEL', KEYS[3], jid)
    n = n + 1
  end
else
  for i = 4, #ARGV, 2 do
    if same_score(redis.call('ZSCORE', KEYS[2], ARGV[i]), ARGV[i + 1]) then
      redis.call('ZREM', KEYS[2], ARGV[i])
      redis.call('HDEL', KEYS[3], ARGV[i])
      n = n + 1
    end
  end
end
remember(tostring(n))
return n
