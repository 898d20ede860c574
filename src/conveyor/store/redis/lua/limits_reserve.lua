-- limits_reserve: reserve.lua for a FETCH naming a limited queue; a limited queue gives no more
-- jobs than its throttle and its bucket allow, and the slots and tokens of what it gives are
-- taken in this same step (store/limits.py).
-- KEYS[1]   {ns}:op:<token>    this call's token (_lib.lua): the jids it reserved, lp() each,
--                              as reserve.lua (so release.lua gives them back alike)
-- KEYS[2]   {ns}:paused        SET of paused queue names
-- KEYS[3]   {ns}:res           HASH jid -> lp(queue) lp(wid) payload
-- KEYS[4]   {ns}:exp           ZSET jid by expires_at
-- KEYS[5]   {ns}:busy          ZSET jid by reserved_at
-- KEYS[6]   {ns}:lkeys         SET of the limit keys below that exist (for flush)
-- then per queue, 4 keys:
--           {ns}:q:<name>      LIST of entries "<reserve_for>:" lp(jid) payload
--           {ns}:tq:<name>     ZSET jid by lease end: the queue's throttle slots
--           {ns}:tw:<name>:<wid>  ZSET jid by lease end: this worker's slots of the queue
--           {ns}:tb:<name>     HASH tokens, at: the queue's token bucket
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] wid, ARGV[4] now (reservations), ARGV[5] count,
-- then per queue: name, concurrency, per_worker, timeout, rate, burst (all 0: no limits).
-- Leases and buckets run on Redis's clock (TIME): servers whose clocks disagree share them.
-- Returns {reservations, blocked}: queue, jid, payload, expires_at, ...; name, wait, ... with
-- wait the seconds until a lease ends or a token is due ("" when only a release will do).
local done = replay()
if done then  -- a retry of a call that ran: what it reserved, and nothing more
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
  return {out, {}}
end
local t = redis.call('TIME')
local clock = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wid, now, want = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out, blocked, taken = {}, {}, {}

local function prune_ended(slots)
  for _, jid in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
    if redis.call('HEXISTS', KEYS[3], jid) == 0 then
      redis.call('ZREM', slots, jid)
    end
  end
end

local function soonest(slots)
  local first = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')
  return first[2] and tonumber(first[2]) - clock or nil
end

local a = 6
for k = 7, #KEYS, 4 do
  if want <= 0 then break end
  local name = ARGV[a]
  local conc, perw = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local timeout, rate, burst = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  a = a + 6
  local queue, slots, mine, bucket = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  if redis.call('SISMEMBER', KEYS[2], name) == 0 and redis.call('LLEN', queue) > 0 then
    local room, waits, release_only = want, {}, false
    local throttled = conc > 0 or perw > 0
    if throttled then
      redis.call('ZREMRANGEBYSCORE', slots, '-inf', clock)
      redis.call('ZREMRANGEBYSCORE', mine, '-inf', clock)
      local in_use, my = redis.call('ZCARD', slots), redis.call('ZCARD', mine)
      if (conc > 0 and in_use >= conc) or (perw > 0 and my >= perw) then
        prune_ended(slots)  -- ended reservations are looked for only when full
        prune_ended(mine)
        in_use, my = redis.call('ZCARD', slots), redis.call('ZCARD', mine)
      end
      for _, limit in ipairs({{conc, in_use, slots}, {perw, my, mine}}) do
        if limit[1] > 0 then
          room = math.min(room, limit[1] - limit[2])
          if limit[2] >= limit[1] then
            local wait = soonest(limit[3])
            if wait then waits[#waits + 1] = wait else release_only = true end
          end
        end
      end
    end
    local tokens = 0
    if rate > 0 then
      local stored = redis.call('HMGET', bucket, 'tokens', 'at')
      tokens = burst
      if stored[1] then
        tokens = math.min(burst, tonumber(stored[1]) + math.max(0, clock - tonumber(stored[2])) * rate)
      end
      room = math.min(room, math.floor(tokens + 1e-9))
      if tokens + 1e-9 < 1 then waits[#waits + 1] = (1 - tokens) / rate end
    end
    if room < 1 then
      local wait = 0
      for _, w in ipairs(waits) do wait = math.max(wait, w) end
      blocked[#blocked + 1] = name
      blocked[#blocked + 1] = (release_only or #waits == 0) and '' or fmt(wait)
    else
      local popped = redis.call('LPOP', queue, room)
      local last_lease = 0
      for _, entry in ipairs(popped) do
        local colon = string.find(entry, ':', 1, true)
        local reserve_for = tonumber(string.sub(entry, 1, colon - 1))
        local jid, pos = read_lp(entry, colon + 1)
        local payload = string.sub(entry, pos)
        local expires = fmt(now + reserve_for)
        redis.call('HSET', KEYS[3], jid, lp(name) .. lp(wid) .. payload)
        redis.call('ZADD', KEYS[4], expires, jid)
        redis.call('ZADD', KEYS[5], ARGV[4], jid)
        taken[#taken + 1] = jid
        if throttled then
          local lease = clock + (timeout > 0 and timeout or reserve_for)
          redis.call('ZADD', slots, fmt(lease), jid)
          redis.call('ZADD', mine, fmt(lease), jid)
          last_lease = math.max(last_lease, lease)
        end
        out[#out + 1] = name
        out[#out + 1] = jid
        out[#out + 1] = payload
        out[#out + 1] = expires
      end
      if throttled then
        -- a worker's slot set outlives its last lease by a minute, whatever happens to it
        local ttl = redis.call('TTL', mine)
        redis.call('EXPIRE', mine, math.max(ttl, math.ceil(last_lease - clock) + 60))
        redis.call('SADD', KEYS[6], slots, mine)
      end
      if rate > 0 then
        redis.call('HSET', bucket, 'tokens', fmt(tokens - #popped), 'at', fmt(clock))
        redis.call('SADD', KEYS[6], bucket)
      end
      want = want - #popped
    end
  end
end
-- As reserve.lua: an idle first attempt records nothing; a retry always records.
if #taken > 0 or ARGV[2] ~= '1' then
  remember(pack(taken))
end
return {out, blocked}
