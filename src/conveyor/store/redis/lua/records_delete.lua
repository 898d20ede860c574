-- records_delete: delete records, with ARGV[3] = "1" only those holding exactly ARGV[4].
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:r:<space>  KEYS[3] {ns}:rx:<space>  (see records_claim)
-- ARGV[3..]: conditional ("1"/"0"), value, then the keys
-- Returns how many were deleted.
local done = replay()
if done then
  return tonumber(done)
end
local deleted = 0
for i = 5, #ARGV do
  local key = ARGV[i]
  local current = redis.call('HGET', KEYS[2], key)
  if current then
    local _, pos = read_lp(current, 1)
    if ARGV[3] == '0' or string.sub(current, pos) == ARGV[4] then
      redis.call('HDEL', KEYS[2], key)
      redis.call('ZREM', KEYS[3], key)
      deleted = deleted + 1
    end
  end
end
remember(tostring(deleted))
return deleted
