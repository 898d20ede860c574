-- cancel: take a job out of where it is and record its cancellation, in one step.
-- KEYS and ARGV below are counted after this call's token (see the note under them).
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
-- an earlier call did it) or "moved" (nothing changed).
-- This call's token is KEYS[1] (ARGV[1] its TTL, ARGV[2] the attempt: _lib.lua); K and A
-- below are the script's own keys and arguments, numbered from 1 as documented above.
local K, A = {}, {}
for i = 2, #KEYS do K[i - 1] = KEYS[i] end
for i = 3, #ARGV do A[i - 2] = ARGV[i] end
local done = replay()
if done then
  return done
end
local where, jid, now = A[1], A[2], tonumber(A[8])

local function take_queued()
  if A[9] ~= '' then  -- the exact entry: LREM compares in C, no scan in Lua
    return redis.call('LREM', K[8], 1, A[9]) > 0
  end
  local start, chunk = 0, 1000
  while true do
    local entries = redis.call('LRANGE', K[8], start, start + chunk - 1)
    for _, entry in ipairs(entries) do
      local colon = string.find(entry, ':', 1, true)
      if read_lp(entry, colon + 1) == jid then
        return redis.call('LREM', K[8], 1, entry) > 0
      end
    end
    if #entries < chunk then return false end
    start = start + chunk
  end
end

local function take_reserved()
  local reservation = redis.call('HGET', K[8], jid)
  if not reservation then return false end
  local _, pos = read_lp(reservation, 1)
  if read_lp(reservation, pos) ~= A[9] then return false end
  redis.call('HDEL', K[8], jid)
  redis.call('ZREM', K[9], jid)
  redis.call('ZREM', K[10], jid)
  return true
end

-- As groups_flush.lua, after one member left.
local function take_member()
  local key = A[9]
  if redis.call('ZREM', K[10], jid) == 0 then return false end
  redis.call('HDEL', K[11], jid)
  redis.call('HDEL', K[12], jid)
  local m = {}
  for field in string.gmatch(redis.call('HGET', K[9], key), '%S+') do
    m[#m + 1] = tonumber(field)
  end
  local size = redis.call('ZCARD', K[10])
  if size == 0 then
    redis.call('DEL', K[10], K[11])
    redis.call('HDEL', K[9], key)
    redis.call('ZREM', K[8], key)
    return true
  end
  local oldest = redis.call('ZRANGE', K[10], 0, 0)[1]
  local first_at = tonumber((read_lp(redis.call('HGET', K[11], oldest), 1)))
  local due = math.min(first_at + m[5], m[3] + m[6])
  if size >= m[4] then due = first_at end
  redis.call('HSET', K[9], key, table.concat({size, fmt(first_at), fmt(m[3]), m[4],
    fmt(m[5]), fmt(m[6]), m[7]}, ' '))
  redis.call('ZADD', K[8], fmt(due), key)
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
  taken = same_score(redis.call('ZSCORE', K[8], jid), A[9])
  if taken then
    redis.call('ZREM', K[8], jid)
    redis.call('HDEL', K[9], jid)
  end
end

if not taken then
  local found = redis.call('HGET', K[2], jid)
  if found then
    local expires = read_lp(found, 1)
    if expires == '' or tonumber(expires) > now then return remember('already') end
  end
  return remember('moved')
end

local function put(hash, index, space, key, value, expires)
  redis.call('HSET', hash, key, lp(expires) .. value)
  if expires == '' then
    redis.call('ZREM', index, key)
  else
    redis.call('ZADD', index, expires, key)
  end
  redis.call('SADD', K[1], space)
end

put(K[2], K[3], 'cancelled', jid, A[3], A[4])
if A[5] ~= '' then
  put(K[4], K[5], 'cancel-notices', jid, A[5], A[6])
end
for _, key in ipairs({'total', A[7]}) do
  local count = 0
  local current = redis.call('HGET', K[6], key)
  if current then
    local _, pos = read_lp(current, 1)
    count = tonumber(string.sub(current, pos)) or 0
  end
  put(K[6], K[7], 'cancel-counts', key, tostring(count + 1), '')
end
return remember('cancelled')
