-- counts_add: add to counters of one space (store/counts.py).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua): a retry adds nothing again
-- KEYS[2] {ns}:n:<space> HASH key -> count; KEYS[3] {ns}:nspaces SET of spaces (for flush)
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] space, then key, delta, ...
if replay() then
  return 1
end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('SADD', KEYS[3], ARGV[3])
remember('1')
return 1
