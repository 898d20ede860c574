-- cancel: take a job out of where it is and record its cancellation, in one step.
-- KEYS[1] {ns}:rspaces                SET   record spaces in use (records_claim.lua)
-- KEYS[2] {ns}:r:cancelled            HASH  jid -> lp(expires_at) record
-- KEYS[3] {ns}:rx:cancelled           ZSET  jid by expires_at
-- KEYS[4] {ns}:r:cancel-notices       HASH  jid -> lp(expires_at) wid
-- KEYS[5] {ns}:rx:cancel-notices      ZSET
-- KEYS[6] {ns}:r:cancel-counts        HASH  "total" / day -> lp("") count
-- KEYS[7] {ns}:rx:cancel-counts       ZSET
-- then, by ARGV[1] (where the job is):
--   queued       KEYS[8] {ns}:q:<name>              ARGV[9] the entry, or "" to look for it
--   scheduled,   KEYS[8] {ns}:s:<set>, KEYS[9] {ns}:d:<set>                ARGV[9] score
--   retries
--   working      KEYS[8] {ns}:res, KEYS[9] {ns}:exp, KEYS[10] {ns}:busy     ARGV[9] wid
--   aggregating  KEYS[8] {ns}:gdue, KEYS[9] {ns}:gmeta, KEYS[10] {ns}:gz:<key>,
--                KEYS[11] {ns}:gd:<key>, KEYS[12] {ns}:gjid (groups_add.lua)  ARGV[9] group key
-- ARGV[2] jid, [3] record, [4] its expires_at, [5] notice ("" = none), [6] its expires_at,
-- [7] day, [8] now
-- Returns "cancelled", "already" (not there, and a live record of its cancellation exists:
-- an earlier call, maybe this one sent again) or "moved" (nothing changed).
local where, jid, now = ARGV[1], ARGV[2], tonumber(ARGV[8])

local function take_queued()
  if ARGV[9] ~= '' then  -- the exact entry: LREM compares in C, no scan in Lua
    return redis.call('LREM', KEYS[8], 1, ARGV[9]) > 0
  end
  local start, chunk = 0, 1000
  while true do
    local entries = redis.call('LRANGE', KEYS[8], start, start + chunk - 1)
    for _, entry in ipairs(entries) do
      local colon = string.find(entry, ':', 1, true)
      if read_lp(entry, colon + 1) == jid then
        return redis.call('LREM', KEYS[8], 1, entry) > 0
      end
    end
    if #entries < chunk then return false end
    start = start + chunk
  end
end

local function take_reserved()
  local reservation = redis.call('HGET', KEYS[8], jid)
  if not reservation then return false end
  local _, pos = read_lp(reservation, 1)
  if read_lp(reservation, pos) ~= ARGV[9] then return false end
  redis.call('HDEL', KEYS[8], jid)
  redis.call('ZREM', KEYS[9], jid)
  redis.call('ZREM', KEYS[10], jid)
  return true
end

-- As groups_flush.lua, after one member left.
local function take_member()
  local key = ARGV[9]
  if redis.call('ZREM', KEYS[10], jid) == 0 then return false end
  redis.call('HDEL', KEYS[11], jid)
  redis.call('HDEL', KEYS[12], jid)
  local m = {}
  for field in string.gmatch(redis.call('HGET', KEYS[9], key), '%S+') do
    m[#m + 1] = tonumber(field)
  end
  local size = redis.call('ZCARD', KEYS[10])
  if size == 0 then
    redis.call('DEL', KEYS[10], KEYS[11])
    redis.call('HDEL', KEYS[9], key)
    redis.call('ZREM', KEYS[8], key)
    return true
  end
  local oldest = redis.call('ZRANGE', KEYS[10], 0, 0)[1]
  local first_at = tonumber((read_lp(redis.call('HGET', KEYS[11], oldest), 1)))
  local due = math.min(first_at + m[5], m[3] + m[6])
  if size >= m[4] then due = first_at end
  redis.call('HSET', KEYS[9], key, table.concat({size, fmt(first_at), fmt(m[3]), m[4],
    fmt(m[5]), fmt(m[6]), m[7]}, ' '))
  redis.call('ZADD', KEYS[8], fmt(due), key)
  return true
end

local taken
if where == 'queued' then
  taken = take_queued()
elseif where == 'working' then
  taken = take_reserved()
elseif where == 'aggregating' then
  taken = take_member()
else
  taken = same_score(redis.call('ZSCORE', KEYS[8], jid), ARGV[9])
  if taken then
    redis.call('ZREM', KEYS[8], jid)
    redis.call('HDEL', KEYS[9], jid)
  end
end

if not taken then
  local found = redis.call('HGET', KEYS[2], jid)
  if found then
    local expires = read_lp(found, 1)
    if expires == '' or tonumber(expires) > now then return 'already' end
  end
  return 'moved'
end

local function put(hash, index, space, key, value, expires)
  redis.call('HSET', hash, key, lp(expires) .. value)
  if expires == '' then
    redis.call('ZREM', index, key)
  else
    redis.call('ZADD', index, expires, key)
  end
  redis.call('SADD', KEYS[1], space)
end

put(KEYS[2], KEYS[3], 'cancelled', jid, ARGV[3], ARGV[4])
if ARGV[5] ~= '' then
  put(KEYS[4], KEYS[5], 'cancel-notices', jid, ARGV[5], ARGV[6])
end
for _, key in ipairs({'total', ARGV[7]}) do
  local count = 0
  local current = redis.call('HGET', KEYS[6], key)
  if current then
    local _, pos = read_lp(current, 1)
    count = tonumber(string.sub(current, pos)) or 0
  end
  put(KEYS[6], KEYS[7], 'cancel-counts', key, tostring(count + 1), '')
end
return 'cancelled'
