-- flush: delete every job, queue, set, reservation, pause flag and counter (not workers).
-- KEYS[1] {ns}:queues  KEYS[2] {ns}:paused  KEYS[3] {ns}:res  KEYS[4] {ns}:exp
-- KEYS[5] {ns}:busy    KEYS[6] {ns}:stats
-- KEYS[7..12] {ns}:s:<set> and {ns}:d:<set> for scheduled, retries, dead
-- KEYS[13..] {ns}:q:<name> for the ARGV names
-- Returns the known queue names the caller did not pass (it calls again with them), so no
-- undeclared key is ever touched.
local given = {}
for _, name in ipairs(ARGV) do given[name] = true end
local missing = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not given[name] then missing[#missing + 1] = name end
end
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
end
if #missing == 0 then
  redis.call('DEL', KEYS[1])
else
  for name, _ in pairs(given) do redis.call('SREM', KEYS[1], name) end
end
return missing
