-- queue_clear: delete every entry of a queue; the queue stays known (and paused, if it was).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:q:<name> LIST of entries
-- Returns how many entries were deleted.
local done = replay()
if done then
  return tonumber(done)
end
local n = redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[2])
remember(tostring(n))
return n
