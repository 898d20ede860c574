-- endings_end: end reservations and return them (store/endings.py); with ARGV[3] "ack" they
-- count as processed, as in ack.lua; with "complete" they count so too and each job is kept in
-- the completed set (store/completed.py: ack.lua and set_add.lua in one step). Those of a
-- throttled queue free their slot in the queue's slot set and wake the FETCHes waiting for it
-- on every server (limits_reserve.lua).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua): what it returned, for its retries
-- KEYS[2] {ns}:res   HASH jid -> lp(queue) lp(wid) payload
-- KEYS[3] {ns}:exp   ZSET jid by expires_at
-- KEYS[4] {ns}:busy  ZSET jid by reserved_at
-- KEYS[5] {ns}:stats HASH processed, failures, p:<day>, f:<day>
-- KEYS[6] {ns}:ready wake-up channel
-- KEYS[7] {ns}:s:completed ZSET jid by expiry     (used by "complete" only)
-- KEYS[8] {ns}:d:completed HASH jid -> lp(queue) lp(jobtype) payload
-- KEYS[9..] {ns}:tq:<queue> of each throttled queue, in ARGV order
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] "ack", "discard" or "complete", ARGV[4] day,
-- ARGV[5] SPUBLISH or PUBLISH, ARGV[6] "<origin> ", ARGV[7] n, ARGV[8 .. 7+n] throttled queue
-- names, then "*" (every payload is returned) or m and m marks (a payload holding none of them
-- is returned empty: the manager needs no other), then the jids (with "complete": each jid
-- followed by its completed entry's score and data).
-- Returns a flat array: jid, reservation, expires_at, reserved_at, ...
local done = replay()
if done then
  return unpack_lp(done)
end
local n_throttled = tonumber(ARGV[7])
local slots = {}
for t = 1, n_throttled do
  slots[ARGV[7 + t]] = KEYS[8 + t]
end
local a = 8 + n_throttled
local marks = nil
if ARGV[a] ~= '*' then
  marks = {}
  for m = 1, tonumber(ARGV[a]) do marks[m] = ARGV[a + m] end
  a = a + #marks
end
local function kept(record)
  if not marks then return record end
  local queue, pos = read_lp(record, 1)
  local wid, start = read_lp(record, pos)
  for _, mark in ipairs(marks) do
    if string.find(record, mark, start, true) then return record end
  end
  return lp(queue) .. lp(wid)
end
local completing = ARGV[3] == 'complete'
local stride = completing and 3 or 1
local out, woke = {}, {}
local n = 0
for i = a + 1, #ARGV, stride do
  local jid = ARGV[i]
  local record = redis.call('HGET', KEYS[2], jid)
  if record then
    out[#out + 1] = jid
    out[#out + 1] = kept(record)
    out[#out + 1] = redis.call('ZSCORE', KEYS[3], jid)
    out[#out + 1] = redis.call('ZSCORE', KEYS[4], jid)
    redis.call('HDEL', KEYS[2], jid)
    redis.call('ZREM', KEYS[3], jid)
    redis.call('ZREM', KEYS[4], jid)
    if completing then
      redis.call('ZADD', KEYS[7], ARGV[i + 1], jid)
      redis.call('HSET', KEYS[8], jid, ARGV[i + 2])
    end
    local queue = read_lp(record, 1)
    if slots[queue] then
      redis.call('ZREM', slots[queue], jid)
      woke[queue] = true
    end
    n = n + 1
  end
end
if n > 0 and ARGV[3] ~= 'discard' then
  redis.call('HINCRBY', KEYS[5], 'processed', n)
  redis.call('HINCRBY', KEYS[5], 'p:' .. ARGV[4], n)
end
for queue, _ in pairs(woke) do
  redis.call(ARGV[5], KEYS[6], ARGV[6] .. queue)
end
remember(pack(out))
return out
