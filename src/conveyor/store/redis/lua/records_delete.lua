-- records_delete: delete records, with ARGV[1] = "1" only those holding exactly ARGV[2].
-- KEYS[1] {ns}:r:<space>  KEYS[2] {ns}:rx:<space>  (see records_claim)
-- ARGV: conditional ("1"/"0"), value, then the keys
-- Returns how many were deleted.
local deleted = 0
for i = 3, #ARGV do
  local key = ARGV[i]
  local current = redis.call('HGET', KEYS[1], key)
  if current then
    local _, pos = read_lp(current, 1)
    if ARGV[1] == '0' or string.sub(current, pos) == ARGV[2] then
      redis.call('HDEL', KEYS[1], key)
      redis.call('ZREM', KEYS[2], key)
      deleted = deleted + 1
    end
  end
end
return deleted
