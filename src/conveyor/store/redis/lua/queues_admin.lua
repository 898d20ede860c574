-- queues_admin: pause, resume or remove queues.
-- KEYS[1]   {ns}:queues   SET of known queue names
-- KEYS[2]   {ns}:paused   SET of paused queue names
-- KEYS[3]   {ns}:ready    wake-up channel (a resumed queue may have jobs)
-- KEYS[4..] {ns}:q:<name> LISTs (only for "remove"), KEYS[i] for the name in ARGV[i]
-- ARGV[1] SPUBLISH or PUBLISH, ARGV[2] "<origin> ", ARGV[3] "pause" | "resume" | "remove",
-- ARGV[4..] names
local mode = ARGV[3]
for i = 4, #ARGV do
  local name = ARGV[i]
  if mode == 'remove' then
    redis.call('DEL', KEYS[i])
    redis.call('SREM', KEYS[1], name)
    redis.call('SREM', KEYS[2], name)
  elseif redis.call('SISMEMBER', KEYS[1], name) == 1 then
    if mode == 'pause' then
      redis.call('SADD', KEYS[2], name)
    elseif redis.call('SREM', KEYS[2], name) == 1 then
      redis.call(ARGV[1], KEYS[3], ARGV[2] .. name)
    end
  end
end
return 1
