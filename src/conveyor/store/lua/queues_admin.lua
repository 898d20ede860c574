-- queues_admin: pause, resume or remove queues.
-- KEYS[1]   {ns}:queues   SET of known queue names
-- KEYS[2]   {ns}:paused   SET of paused queue names
-- KEYS[3]   {ns}:ready    wake-up channel (a resumed queue may have jobs)
-- KEYS[4..] {ns}:q:<name> LISTs (only for "remove"), in ARGV name order
-- ARGV[1] SPUBLISH or PUBLISH, ARGV[2] "pause" | "resume" | "remove", ARGV[3..] names
local mode = ARGV[2]
for i = 3, #ARGV do
  local name = ARGV[i]
  if mode == 'remove' then
    redis.call('DEL', KEYS[i + 1])
    redis.call('SREM', KEYS[1], name)
    redis.call('SREM', KEYS[2], name)
  elseif redis.call('SISMEMBER', KEYS[1], name) == 1 then
    if mode == 'pause' then
      redis.call('SADD', KEYS[2], name)
    elseif redis.call('SREM', KEYS[2], name) == 1 then
      redis.call(ARGV[1], KEYS[3], name)
    end
  end
end
return 1
