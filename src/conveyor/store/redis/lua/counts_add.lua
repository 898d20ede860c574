-- counts_add: add to counters of one space (store/counts.py).
-- KEYS[1] {ns}:n:<space> HASH key -> count; KEYS[2] {ns}:nspaces SET of spaces (for flush)
-- ARGV[1] space, then key, delta, ...
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
