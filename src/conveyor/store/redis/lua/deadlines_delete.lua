-- deadlines_delete: delete deadlines of one space (store/deadlines.py).
-- KEYS[1] {ns}:dl:<space> ZSET; KEYS[2] {ns}:dv:<space> HASH. ARGV: keys.
-- Returns how many there were.
local n = 0
for _, key in ipairs(ARGV) do
  n = n + redis.call('ZREM', KEYS[1], key)
  redis.call('HDEL', KEYS[2], key)
end
return n
