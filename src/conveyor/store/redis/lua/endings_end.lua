-- uses: batches
-- endings_end: end reservations and return them (store/endings.py); with ARGV[3] "ack" they
-- count as processed, as in ack.lua, a job with a kept entry goes into the completed set
-- (store/completed.py: set_add.lua in the same step), and those of a throttled queue free
-- their slot in the queue's slot set and wake the FETCHes waiting for it on every server
-- (limits_reserve.lua). With ends (an ACK while the batches feature runs), a job with an
-- unfinished mark also ends it in this step, as batches_end.lua does for a success (end_all,
-- _batches.lua): its batch's counters, callbacks and the jobs waiting for it move with its
-- reservation. One whose batch is not declared here is left alone (reservation, entry and
-- mark) and returned as held, for the caller to ACK again with its batch declared. Without
-- ends it runs as endings_end/bare, without _batches.lua (scripts.py), whose top level every
-- call would otherwise run.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua): what it returned, for its retries
-- KEYS[2] {ns}:res   HASH jid -> lp(queue) lp(wid) payload
-- KEYS[3] {ns}:exp   ZSET jid by expires_at
-- KEYS[4] {ns}:busy  ZSET jid by reserved_at
-- KEYS[5] {ns}:stats HASH processed, failures, p:<day>, f:<day>
-- KEYS[6] {ns}:ready wake-up channel
-- KEYS[7] {ns}:s:completed ZSET jid by expiry
-- KEYS[8] {ns}:d:completed HASH jid -> lp(queue) lp(jobtype) payload
-- KEYS[9 .. 8+n] {ns}:tq:<queue> of each throttled queue, in ARGV order
-- with ends, then: the five SETTLE keys (_batches.lua), {ns}:waiting, {ns}:waitz,
-- {ns}:edges, and {ns}:b:<bid> of each declared batch, in ARGV order
-- with records (r > 0 below), last: {ns}:r:<space>, {ns}:rx:<space>, {ns}:rspaces (as
-- records_put.lua), {ns}:signals (as signal_publish.lua) and {ns}:sw:<topic> (the jids some
-- server waits for: signal_expect.lua)
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] "ack" or "discard", ARGV[4] day,
-- ARGV[5] SPUBLISH or PUBLISH, ARGV[6] "<origin> ", ARGV[7] n, ARGV[8 .. 7+n] throttled queue
-- names, then "*" (every payload is returned) or m and m marks (a payload holding none of them
-- is returned empty: the manager needs no other), then "-" (no ends) or: now (a score), keep
-- (seconds a finished plain mark lives), b and b bids; then k and k kept entries (jid, score,
-- data: what the completed set keeps of the job); then r and, when r > 0, the records'
-- space, r records (jid, key, value, expires_at or "", lp(queue) lp(wid), reserved_at: the
-- reservation the record, or the kept entry, was built from; key "": no record, an entry
-- only), each written (as records_put.lua) only when the reservation of its jid ends here,
-- and the start of the signal ("<origin> <topic>", "" none): the jids so ended that a server
-- waits for (registered in {ns}:sw:<topic>, whose registrations they use up) are published on
-- the signals channel as "<start> <their JSON array>", the others not at all (a RESULT
-- registers before its last look: one that does not find the record is told). What an ACK
-- stores with its jobs' results (endings.py, RedisEndings._settle). A jid whose
-- reservation is another one (its queue, worker or reservation time differ: the job was
-- reserved again since) is left alone and returned as stale, for the caller to read and
-- ACK again; then the jids.
-- Returns, and remembers, one string: lp(ended) lp(fired) lp(held) lp(stale), each
-- lp-packed: ended is jid, reservation, expires_at, reserved_at, ...; fired as packed_fired()
-- ("" without ends); held is jid, bid, ...; stale is jid, ...
local done = replay()
if done then
  return done
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
a = a + 1
local ends, now, keep = false, nil, nil
if ARGV[a] ~= '-' then
  if BARE then
    return redis.error_reply('endings_end/bare cannot end marks')
  end
  ends, now, keep = true, ARGV[a], tonumber(ARGV[a + 1])
  SK = 8 + n_throttled
  EK = {waiting = KEYS[SK + 6], waitz = KEYS[SK + 7], edges = KEYS[SK + 8], res = KEYS[2],
    exp = KEYS[3], busy = KEYS[4]}
  local nb = tonumber(ARGV[a + 2])
  for i = 1, nb do declared[ARGV[a + 2 + i]] = KEYS[SK + 8 + i] end
  a = a + 2 + nb
end
a = a + 1
local entries = {}
local n_kept = tonumber(ARGV[a])
for e = 0, n_kept - 1 do
  local at = a + 1 + 3 * e
  entries[ARGV[at]] = at
end
a = a + 3 * n_kept + 1
local records, n_records, space, signal = {}, tonumber(ARGV[a]), nil, ''
local RK = #KEYS - 4
if n_records > 0 then
  space = ARGV[a + 1]
  for r = 0, n_records - 1 do
    local at = a + 2 + 6 * r
    records[ARGV[at]] = at
  end
  a = a + 1 + 6 * n_records + 1
  signal = ARGV[a]
end
local wrote, told = false, {}
local function sent(record)
  if not marks then return record end
  local queue, pos = read_lp(record, 1)
  local wid, start = read_lp(record, pos)
  for _, mark in ipairs(marks) do
    if string.find(record, mark, start, true) then return record end
  end
  return lp(queue) .. lp(wid)
end
local out, woke, held, work, stale = {}, {}, {}, {}, {}
local function other(record, rat)
  local check = ARGV[rat + 4]
  return string.sub(record, 1, #check) ~= check
    or tonumber(redis.call('ZSCORE', KEYS[4], ARGV[rat])) ~= tonumber(ARGV[rat + 5])
end
local n = 0
for i = a + 1, #ARGV do
  local jid = ARGV[i]
  local record = redis.call('HGET', KEYS[2], jid)
  local m = record and ends and mark_get(jid, tonumber(now)) or nil
  if m and not UNFINISHED[m.state] then m = nil end
  local rat = record and records[jid]
  if m and m.bid ~= '' and not declared[m.bid] then
    held[#held + 1] = jid
    held[#held + 1] = m.bid
  elseif rat and other(record, rat) then
    stale[#stale + 1] = jid
  elseif record then
    out[#out + 1] = jid
    out[#out + 1] = sent(record)
    out[#out + 1] = redis.call('ZSCORE', KEYS[3], jid)
    out[#out + 1] = redis.call('ZSCORE', KEYS[4], jid)
    redis.call('HDEL', KEYS[2], jid)
    redis.call('ZREM', KEYS[3], jid)
    redis.call('ZREM', KEYS[4], jid)
    local at = entries[jid]
    if at then
      redis.call('ZADD', KEYS[7], ARGV[at + 1], jid)
      redis.call('HSET', KEYS[8], jid, ARGV[at + 2])
    end
    if rat then
      local key, expires = ARGV[rat + 1], ARGV[rat + 3]
      if key ~= '' then
        redis.call('HSET', KEYS[RK], key, lp(expires) .. ARGV[rat + 2])
        if expires == '' then
          redis.call('ZREM', KEYS[RK + 1], key)
        else
          redis.call('ZADD', KEYS[RK + 1], expires, key)
        end
        wrote = true
      end
      if signal ~= '' and redis.call('ZREM', KEYS[RK + 4], jid) == 1 then
        told[#told + 1] = jid
      end
    end
    local queue = read_lp(record, 1)
    if slots[queue] then
      redis.call('ZREM', slots[queue], jid)
      woke[queue] = true
    end
    n = n + 1
    if m then
      PRE_ENDED[jid] = true
      work[#work + 1] = {jid = jid, outcome = 'success', cause = '', mark = m}
    end
  end
end
if #work > 0 then
  end_all(work, now, keep, nil, nil)
end
if n > 0 and ARGV[3] == 'ack' then
  redis.call('HINCRBY', KEYS[5], 'processed', n)
  redis.call('HINCRBY', KEYS[5], 'p:' .. ARGV[4], n)
end
if wrote then
  redis.call('SADD', KEYS[RK + 2], space)
end
if #told > 0 then
  redis.call(ARGV[5], KEYS[RK + 3], signal .. ' ' .. cjson.encode(told))
end
for queue, _ in pairs(woke) do
  redis.call(ARGV[5], KEYS[6], ARGV[6] .. queue)
end
return remember(pack({pack(out), ends and packed_fired() or '', pack(held), pack(stale)}))
