-- reserve: pop up to `count` entries from the first non-paused queues and record reservations.
-- KEYS[1]   {ns}:op:<token> this call's token (_lib.lua): the jids it reserved, lp() each
-- KEYS[2]   {ns}:paused   SET of paused queue names
-- KEYS[3]   {ns}:res      HASH jid -> lp(queue) lp(wid) payload
-- KEYS[4]   {ns}:exp      ZSET jid scored by expires_at
-- KEYS[5]   {ns}:busy     ZSET jid scored by reserved_at
-- KEYS[6..] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] wid, ARGV[4] now, ARGV[5] count,
-- ARGV[6..] queue names in KEYS[6..] order
-- Returns a flat array: queue, jid, payload, expires_at, ...
-- A first attempt that reserves nothing records nothing (an idle FETCH writes nothing); a
-- retry always records, so a first attempt arriving after it cannot reserve to nobody.
local done = replay()
if done then
  local out = {}
  for _, jid in ipairs(unpack_lp(done)) do
    local record = redis.call('HGET', KEYS[3], jid)
    if record then
      local queue, pos = read_lp(record, 1)
      local _, start = read_lp(record, pos)
      out[#out + 1] = queue
      out[#out + 1] = jid
      out[#out + 1] = string.sub(record, start)
      out[#out + 1] = redis.call('ZSCORE', KEYS[4], jid)
    end
  end
  return out
end
local wid, now, want = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out, taken = {}, {}
for k = 6, #KEYS do
  if want <= 0 then break end
  local name = ARGV[k]
  if redis.call('SISMEMBER', KEYS[2], name) == 0 then
    local popped = redis.call('LPOP', KEYS[k], want)
    if popped then
      for _, entry in ipairs(popped) do
        local colon = string.find(entry, ':', 1, true)
        local reserve_for = tonumber(string.sub(entry, 1, colon - 1))
        local jid, pos = read_lp(entry, colon + 1)
        local payload = string.sub(entry, pos)
        local expires = fmt(now + reserve_for)
        redis.call('HSET', KEYS[3], jid, lp(name) .. lp(wid) .. payload)
        redis.call('ZADD', KEYS[4], expires, jid)
        redis.call('ZADD', KEYS[5], ARGV[4], jid)
        out[#out + 1] = name
        out[#out + 1] = jid
        out[#out + 1] = payload
        out[#out + 1] = expires
        taken[#taken + 1] = jid
      end
      want = want - #popped
    end
  end
end
if #taken > 0 or ARGV[2] ~= '1' then
  remember(pack(taken))
end
return out
