-- batches_end: an attempt of each of these marked jobs ended (store/batches.py end_jobs,
-- batch_engine._end_one). A success also ends the job's reservation, as ack.lua does.
-- KEYS[1..5] SETTLE keys (_batches.lua), KEYS[6] {ns}:waiting, KEYS[7] {ns}:waitz,
-- KEYS[8] {ns}:edges, KEYS[9] {ns}:res, KEYS[10] {ns}:exp, KEYS[11] {ns}:busy,
-- KEYS[12] {ns}:stats, KEYS[13] {ns}:s:dead, KEYS[14] {ns}:d:dead, KEYS[15..] {ns}:b:<bid>
-- ARGV[1] day, ARGV[2] now, ARGV[3] keep seconds, ARGV[4] dead score, ARGV[5] now as
-- RFC 3339, ARGV[6] number of batches, then their bids (KEYS[15..] order), then per end:
-- jid, outcome (success | failed | dead), cause.
-- Returns the fired lists (_batches.lua).
local day, now, keep, dead_score, failed_at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local nb = tonumber(ARGV[6])
for i = 1, nb do declared[ARGV[6 + i]] = KEYS[14 + i] end
local processed = 0

local function end_reservation(jid)
  if redis.call('HDEL', KEYS[9], jid) == 0 then return false end
  redis.call('ZREM', KEYS[10], jid)
  redis.call('ZREM', KEYS[11], jid)
  processed = processed + 1
  return true
end

local function next_state(state, outcome)
  if outcome == 'success' then
    if state ~= 'success' then return 'success' end
    return nil
  end
  if state == 'success' then return nil end
  if outcome == 'failed' then
    if state ~= 'failed' then return 'failed' end
    return nil
  end
  if state ~= 'dead' then return 'dead' end
  return nil
end

local function count(b, m, new_state)
  if m.role ~= '' then
    if new_state == 'success' then
      if m.role == 'complete' and b.complete_st == '1' then b.complete_st = '2' end
      if m.role == 'success' and b.success_st == '1' then b.success_st = '2' end
    end
    return
  end
  local started = m.state == 'enqueued' or m.state == 'waiting'
  local failing = m.state == 'failed' or m.state == 'dead'
  if started and (new_state == 'failed' or new_state == 'dead') then
    b.failed = b.failed + 1
  elseif failing and new_state == 'success' then
    b.failed = b.failed - 1
  end
  if new_state == 'success' then b.pending = b.pending - 1 end
end

local function release(dep)
  for _, jid in ipairs(unpack_list(redis.call('HGET', KEYS[8], dep))) do
    local w = waiting_get(KEYS[6], jid)
    if w and w.remaining >= 0 then
      if w.remaining > 1 then
        w.remaining = w.remaining - 1
        waiting_put(KEYS[6], w)
      else
        redis.call('HDEL', KEYS[6], jid)
        redis.call('ZREM', KEYS[7], jid)
        local due = math.max(tonumber(w.due), tonumber(now))
        schedule(fmt(due), jid, w.queue, w.jobtype, w.payload)
        local m = mark_get(jid, tonumber(now))
        if m then
          m.state, m.updated = 'enqueued', now
          mark_put(m)
        end
      end
    end
  end
  redis.call('HDEL', KEYS[8], dep)
end

local work, head = {}, 1
local i = 7 + nb
while i <= #ARGV do
  work[#work + 1] = {jid = ARGV[i], outcome = ARGV[i + 1], cause = ARGV[i + 2]}
  i = i + 3
end
while head <= #work do
  local e = work[head]
  head = head + 1
  local m = mark_get(e.jid, tonumber(now))
  local new_state = m and next_state(m.state, e.outcome) or nil
  local b, doomed = nil, false
  if new_state and m.bid ~= '' then
    if declared[m.bid] then
      b = batch_load(declared[m.bid])
    else  -- its batch is not declared here: durable for the sweep, and back to the caller
      local w = waiting_get(KEYS[6], e.jid)
      if w then
        w.remaining, w.doomed_by = -1, e.cause
        waiting_put(KEYS[6], w)
      end
      local n = #F.doomed
      F.doomed[n + 1], F.doomed[n + 2], F.doomed[n + 3], F.doomed[n + 4] = e.jid, e.outcome, m.bid, e.cause
      new_state, doomed = nil, true
    end
  end
  if e.outcome == 'success' and not doomed and not end_reservation(e.jid) then
    new_state = nil
  end
  if new_state then
      if m.state == 'waiting' then  -- killed before it ran
        local w = waiting_get(KEYS[6], e.jid)
        redis.call('HDEL', KEYS[6], e.jid)
        redis.call('ZREM', KEYS[7], e.jid)
        if w then
          redis.call('ZADD', KEYS[13], dead_score, e.jid)
          redis.call('HSET', KEYS[14], e.jid,
            lp(w.queue) .. lp(w.jobtype) .. bury_payload(w.payload, e.cause, failed_at))
          F.killed[#F.killed + 1] = e.jid
        end
      end
      local old_state = m.state
      if m.bid == '' then m.expires = fmt(tonumber(now) + keep) end
      m.state, m.updated = new_state, now
      mark_put(m)
      m.state = old_state
      if new_state == 'success' or new_state == 'dead' then F.ended[#F.ended + 1] = e.jid end
      if b then
        count(b, m, new_state)
        settle(b, now)
      end
      if new_state == 'success' then
        release(e.jid)
      elseif new_state == 'dead' then
        local cause = e.cause ~= '' and e.cause or e.jid
        for _, w in ipairs(unpack_list(redis.call('HGET', KEYS[8], e.jid))) do
          work[#work + 1] = {jid = w, outcome = 'dead', cause = cause}
        end
        redis.call('HDEL', KEYS[8], e.jid)
      end
  end
end
F.processed = processed
if processed > 0 then
  redis.call('HINCRBY', KEYS[12], 'processed', processed)
  redis.call('HINCRBY', KEYS[12], 'p:' .. day, processed)
end
return fired()
