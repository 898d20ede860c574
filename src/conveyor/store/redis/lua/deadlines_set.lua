-- deadlines_set: store deadlines of one space (store/deadlines.py).
-- KEYS[1] {ns}:dl:<space> ZSET key by time; KEYS[2] {ns}:dv:<space> HASH key -> value;
-- KEYS[3] {ns}:dspaces SET of spaces (for flush)
-- ARGV[1] space, then key, at, value, ...
for i = 2, #ARGV, 3 do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
end
redis.call('SADD', KEYS[3], ARGV[1])
return 1
