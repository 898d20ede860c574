-- queue_clear: delete every entry of a queue; the queue stays known (and paused, if it was).
-- KEYS[1] {ns}:q:<name> LIST of entries
-- Returns how many entries were deleted.
local n = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
