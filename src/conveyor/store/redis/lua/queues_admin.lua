-- queues_admin: pause, resume or remove queues.
-- KEYS[1]   {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2]   {ns}:queues   SET of known queue names
-- KEYS[3]   {ns}:paused   SET of paused queue names
-- KEYS[4]   {ns}:ready    wake-up channel (a resumed queue may have jobs)
-- KEYS[5..] {ns}:q:<name> LISTs (only for "remove"), KEYS[i - 1] for the name in ARGV[i]
-- ARGV[3] SPUBLISH or PUBLISH, ARGV[4] "<origin> ", ARGV[5] "pause" | "resume" | "remove",
-- ARGV[6..] names
if replay() then
  return 1
end
local mode = ARGV[5]
for i = 6, #ARGV do
  local name = ARGV[i]
  if mode == 'remove' then
    redis.call('DEL', KEYS[i - 1])
    redis.call('SREM', KEYS[2], name)
    redis.call('SREM', KEYS[3], name)
  elseif redis.call('SISMEMBER', KEYS[2], name) == 1 then
    if mode == 'pause' then
      redis.call('SADD', KEYS[3], name)
    elseif redis.call('SREM', KEYS[3], name) == 1 then
      redis.call(ARGV[3], KEYS[4], ARGV[4] .. name)
    end
  end
end
remember('1')
return 1
