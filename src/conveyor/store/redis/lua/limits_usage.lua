-- limits_usage: what limited queues use now (store/limits.py); reads only.
-- KEYS[1] {ns}:res HASH of reservations, then per queue: {ns}:tq:<name>, {ns}:tb:<name>
-- ARGV: per queue: rate, burst
-- Returns per queue: live slots (lease not over, reservation not ended), tokens ("" if none).
local t = redis.call('TIME')
local clock = tonumber(t[1]) + tonumber(t[2]) / 1000000
local out = {}
for k = 2, #KEYS, 2 do
  local live = 0
  for _, jid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k], '(' .. fmt(clock), '+inf')) do
    if redis.call('HEXISTS', KEYS[1], jid) == 1 then live = live + 1 end
  end
  local rate, burst = tonumber(ARGV[k - 1]), tonumber(ARGV[k])
  local tokens = ''
  if rate > 0 then
    local stored = redis.call('HMGET', KEYS[k + 1], 'tokens', 'at')
    local have = burst
    if stored[1] then
      have = math.min(burst, tonumber(stored[1]) + math.max(0, clock - tonumber(stored[2])) * rate)
    end
    tokens = fmt(have)
  end
  out[#out + 1] = live
  out[#out + 1] = tokens
end
return out
