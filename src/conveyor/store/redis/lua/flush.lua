-- flush: delete every job, queue, set, reservation, pause flag and counter (not workers).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:queues  KEYS[3] {ns}:paused  KEYS[4] {ns}:res  KEYS[5] {ns}:exp
-- KEYS[6] {ns}:busy    KEYS[7] {ns}:stats
-- KEYS[8..13] {ns}:s:<set> and {ns}:d:<set> for scheduled, retries, dead
-- KEYS[14..] {ns}:q:<name> for the ARGV[3..] names
-- Returns the known queue names the caller did not pass (it calls again with them), so no
-- undeclared key is ever touched.
local done = replay()
if done then
  return unpack_lp(done)
end
local given = {}
for i = 3, #ARGV do given[ARGV[i]] = true end
local missing = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not given[name] then missing[#missing + 1] = name end
end
for i = 3, #KEYS do
  redis.call('DEL', KEYS[i])
end
if #missing == 0 then
  redis.call('DEL', KEYS[2])
else
  for name, _ in pairs(given) do redis.call('SREM', KEYS[2], name) end
end
remember(pack(missing))
return missing
