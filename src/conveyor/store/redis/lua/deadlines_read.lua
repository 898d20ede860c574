-- deadlines_read: the due deadlines of one space, soonest first (store/deadlines.py); reads.
-- KEYS[1] {ns}:dl:<space> ZSET key by time; KEYS[2] {ns}:dv:<space> HASH key -> value
-- ARGV[1] before, ARGV[2] limit. Returns a flat array: key, at, value, ...
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i]) or ''
end
return out
