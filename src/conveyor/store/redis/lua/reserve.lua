-- reserve: pop up to `count` entries from the first non-paused queues and record reservations.
-- KEYS[1]   {ns}:paused   SET of paused queue names
-- KEYS[2]   {ns}:res      HASH jid -> lp(queue) lp(wid) payload
-- KEYS[3]   {ns}:exp      ZSET jid scored by expires_at
-- KEYS[4]   {ns}:busy     ZSET jid scored by reserved_at
-- KEYS[5..] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload
-- ARGV[1] wid, ARGV[2] now, ARGV[3] count, ARGV[4..] queue names in KEYS[5..] order
-- Returns a flat array: queue, jid, payload, expires_at, ...
local wid, now, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for k = 5, #KEYS do
  if want <= 0 then break end
  local name = ARGV[k - 1]
  if redis.call('SISMEMBER', KEYS[1], name) == 0 then
    local popped = redis.call('LPOP', KEYS[k], want)
    if popped then
      for _, entry in ipairs(popped) do
        local colon = string.find(entry, ':', 1, true)
        local reserve_for = tonumber(string.sub(entry, 1, colon - 1))
        local jid, pos = read_lp(entry, colon + 1)
        local payload = string.sub(entry, pos)
        local expires = fmt(now + reserve_for)
        redis.call('HSET', KEYS[2], jid, lp(name) .. lp(wid) .. payload)
        redis.call('ZADD', KEYS[3], expires, jid)
        redis.call('ZADD', KEYS[4], ARGV[2], jid)
        out[#out + 1] = name
        out[#out + 1] = jid
        out[#out + 1] = payload
        out[#out + 1] = expires
      end
      want = want - #popped
    end
  end
end
return out
