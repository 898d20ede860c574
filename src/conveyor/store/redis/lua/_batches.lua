-- Helpers of the batches_*.lua scripts, prepended to each of them after _lib.lua
-- (store/redis/scripts.py). The rules mirror store/batch_engine.py step for step; the key
-- layout is in store/redis/batches.py. Every script that may fire callbacks takes the five
-- SETTLE keys, first (SK = 0) or after keys of its own (it sets SK to their number first):
--   KEYS[1] {ns}:marks         HASH jid -> lp(state) lp(updated_at) lp(bid) lp(role) lp(expires)
--   KEYS[2] {ns}:markx         ZSET jid by expires_at (marks that expire)
--   KEYS[3] {ns}:s:scheduled   KEYS[4] {ns}:d:scheduled   the scheduled set (callbacks,
--                              released jobs go there, due now, for the promoter)
--   KEYS[5] {ns}:bprop         SET children whose parent has a milestone to count
-- Batch hashes are declared by the caller; `declared[bid]` is the key of each.

-- A call's own state. A script's top level runs at every call; a function library's runs
-- once, when it is loaded (scripts.py), and then each call starts with fresh(), which empties
-- the tables the last call left (a table made and collected costs Redis more than a clear).
local SK, F, declared, LOADED, DIRTY, EK, PRE_ENDED

local function clear(t)
  for k in pairs(t) do t[k] = nil end
end

local function fresh()
  SK = 0
  if not F then
    declared, LOADED, DIRTY, EK, PRE_ENDED = {}, {}, {}, {}, {}
    F = {sched = {}, ended = {}, marked = {}, prop = {}, doomed = {}, killed = {}, processed = 0}
    return
  end
  clear(declared); clear(LOADED); clear(DIRTY); clear(EK); clear(PRE_ENDED)
  clear(F.sched); clear(F.ended); clear(F.marked); clear(F.prop); clear(F.doomed)
  clear(F.killed)
  F.processed = 0
end

fresh()

local function pack_list(items)
  local out = {}
  for i, item in ipairs(items) do out[i] = lp(item) end
  return table.concat(out)
end

local function unpack_list(s)
  local out, pos = {}, 1
  while s and pos <= #s do
    local item
    item, pos = read_lp(s, pos)
    out[#out + 1] = item
  end
  return out
end

-- ------------------------------------------------------------------ marks

-- The live mark of jid, or nil (and true when an expired one is still stored).
local function mark_get(jid, now)
  local raw = redis.call('HGET', KEYS[SK + 1], jid)
  if not raw then return nil, false end
  local state, updated, bid, role, expires, pos
  state, pos = read_lp(raw, 1)
  updated, pos = read_lp(raw, pos)
  bid, pos = read_lp(raw, pos)
  role, pos = read_lp(raw, pos)
  expires = read_lp(raw, pos)
  if expires ~= '' and tonumber(expires) <= now then return nil, true end
  -- one constructor: the table is sized once, not grown field by field
  return {jid = jid, state = state, updated = updated, bid = bid, role = role, expires = expires}
end

-- unlisted: the caller knows the jid is not in {ns}:markx (its stored mark names a batch:
-- such a mark is never listed there)
local function mark_put(m, unlisted)
  redis.call('HSET', KEYS[SK + 1], m.jid, lp(m.state) .. lp(m.updated) .. lp(m.bid) .. lp(m.role) .. lp(m.expires))
  if m.expires == '' or m.bid ~= '' then  -- a batch job's mark goes with its batch
    if not unlisted then redis.call('ZREM', KEYS[SK + 2], m.jid) end
  else
    redis.call('ZADD', KEYS[SK + 2], m.expires, m.jid)
  end
end

local UNFINISHED = {enqueued = true, waiting = true, failed = true}

-- ------------------------------------------------------------------ batches

-- The fields a run reads (a callback's queue, type and payload only when it enqueues one:
-- call_back); END_FIELDS, those ending jobs needs (count, settle: end_all).
local BFIELDS = {'bid', 'created_at', 'expires_at', 'description', 'parent_bid', 'committed',
  'committed_at', 'total', 'pending', 'failed', 'complete_st', 'success_st', 'children',
  'kids_complete', 'kids_success', 'm_complete', 'm_success', 'r_complete', 'r_success',
  'cc_jid', 'sc_jid'}
local END_FIELDS = {'bid', 'parent_bid', 'committed', 'pending', 'failed', 'complete_st',
  'success_st', 'kids_complete', 'kids_success', 'm_complete', 'm_success', 'cc_jid', 'sc_jid'}
local INTS = {'total', 'pending', 'failed', 'children', 'kids_complete', 'kids_success'}
local SAVED = {'expires_at', 'parent_bid', 'committed', 'committed_at', 'total', 'pending',
  'failed', 'complete_st', 'success_st', 'children', 'kids_complete', 'kids_success',
  'm_complete', 'm_success', 'r_complete', 'r_success'}


-- A run reads each batch once and writes it once (flush_batches), however many of its jobs
-- it moves: a PUSHB of 1,000 jobs into one batch does not rewrite its hash 1,000 times. It
-- writes only the fields that changed (a job's PUSH or ACK: one or two counters).
-- fields: those to read (BFIELDS unless given; 'bid' first). A run reads every batch with
-- the same fields: one that reads some writes back only those it changed (flush_batches).
local function batch_load(key, fields)
  if not key then return nil end
  if LOADED[key] ~= nil then return LOADED[key] or nil end
  fields = fields or BFIELDS
  local values = redis.call('HMGET', key, unpack(fields))
  if not values[1] then  -- every batch has its bid: there is no such batch
    LOADED[key] = false
    return nil
  end
  -- Each table made by one constructor naming every field it may get (BFIELDS, SAVED): it is
  -- sized once instead of grown (and rehashed) as its fields are set; a nil is not stored.
  local b = {key = key, was = nil, bid = nil, created_at = nil, expires_at = nil,
    description = nil, parent_bid = nil, committed = nil, committed_at = nil, total = nil,
    pending = nil, failed = nil, complete_st = nil, success_st = nil, children = nil,
    kids_complete = nil, kids_success = nil, m_complete = nil, m_success = nil,
    r_complete = nil, r_success = nil, cc_jid = nil, sc_jid = nil}
  for i, field in ipairs(fields) do b[field] = values[i] or '' end
  for _, field in ipairs(INTS) do b[field] = tonumber(b[field]) or 0 end
  -- what is stored, to write back only what changed (no tostring here)
  local was = {expires_at = nil, parent_bid = nil, committed = nil, committed_at = nil,
    total = nil, pending = nil, failed = nil, complete_st = nil, success_st = nil,
    children = nil, kids_complete = nil, kids_success = nil, m_complete = nil, m_success = nil,
    r_complete = nil, r_success = nil}
  for _, field in ipairs(SAVED) do was[field] = b[field] end
  b.was = was
  LOADED[key] = b
  return b
end

local function batch_save(b)
  DIRTY[b.key] = b
end

local function flush_batches()
  for key, b in pairs(DIRTY) do
    local args, was = {}, b.was
    for _, field in ipairs(SAVED) do
      local value = b[field]
      if value ~= was[field] then  -- a counter is a number on both sides, a flag a string
        args[#args + 1] = field
        args[#args + 1] = tostring(value)
        was[field] = value
      end
    end
    if #args > 0 then redis.call('HSET', key, unpack(args)) end
  end
  clear(DIRTY)
end

local function fired()
  flush_batches()
  return {F.sched, F.ended, F.marked, F.prop, F.doomed, F.killed, F.processed}
end

local function schedule(score, jid, queue, jobtype, payload)
  redis.call('ZADD', KEYS[SK + 3], score, jid)
  redis.call('HSET', KEYS[SK + 4], jid, lp(queue) .. lp(jobtype) .. payload)
  local n = #F.sched
  F.sched[n + 1], F.sched[n + 2], F.sched[n + 3] = score, jid, queue
  F.sched[n + 4], F.sched[n + 5] = jobtype, payload
end

local function call_back(b, prefix, role, now)
  local jid = b[prefix .. '_jid']
  local job = redis.call('HMGET', b.key, prefix .. '_queue', prefix .. '_type', prefix .. '_payload')
  schedule(now, jid, job[1] or '', job[2] or '', job[3] or '')
  mark_put({jid = jid, state = 'enqueued', updated = now, bid = b.bid, role = role,
    expires = ''})
  F.marked[#F.marked + 1] = jid
end

local function milestone(b)
  if b.parent_bid ~= '' and redis.call('SADD', KEYS[SK + 5], b.bid) == 1 then
    F.prop[#F.prop + 1] = b.bid
  end
end

-- Save b after firing what its counters make due (nothing while it is open).
local function settle(b, now)
  if b.committed == '1' then
    local has_complete, has_success = b.cc_jid ~= '', b.sc_jid ~= ''
    local complete_reached = b.pending == b.failed and b.kids_complete == 0
    if complete_reached and has_complete and b.complete_st == '' then
      b.complete_st = '1'
      call_back(b, 'cc', 'complete', now)
    end
    local complete_done = complete_reached and (not has_complete or b.complete_st == '2')
    if complete_done and b.m_complete ~= '1' then
      b.m_complete = '1'
      milestone(b)
    end
    local success_reached = complete_done and b.pending == 0 and b.kids_success == 0
    if success_reached and has_success and b.success_st == '' then
      b.success_st = '1'
      call_back(b, 'sc', 'success', now)
    end
    local success_done = success_reached and (not has_success or b.success_st == '2')
    if success_done and b.m_success ~= '1' then
      b.m_success = '1'
      milestone(b)
    end
  end
  batch_save(b)
end

-- ------------------------------------------------------------------ waiting jobs
-- {ns}:waiting HASH jid -> lp(queue) lp(jobtype) lp(due) lp(remaining) lp(since) lp(bid)
--                          lp(doomed_by) lp(pack_list(after)) payload
-- {ns}:edges   HASH dep -> pack_list(waiting jids)

local function waiting_get(key, jid)
  local raw = redis.call('HGET', key, jid)
  if not raw then return nil end
  local w, pos = {jid = jid}, 1
  w.queue, pos = read_lp(raw, pos)
  w.jobtype, pos = read_lp(raw, pos)
  w.due, pos = read_lp(raw, pos)
  w.remaining, pos = read_lp(raw, pos)
  w.since, pos = read_lp(raw, pos)
  w.bid, pos = read_lp(raw, pos)
  w.doomed_by, pos = read_lp(raw, pos)
  w.after, pos = read_lp(raw, pos)
  w.payload = string.sub(raw, pos)
  w.remaining = tonumber(w.remaining)
  return w
end

local function waiting_put(key, w)
  redis.call('HSET', key, w.jid, lp(w.queue) .. lp(w.jobtype) .. lp(w.due) .. lp(tostring(w.remaining))
    .. lp(w.since) .. lp(w.bid) .. lp(w.doomed_by) .. lp(w.after) .. w.payload)
end

local function json_string(s)
  local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
    ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
  return '"' .. string.gsub(s, '[%c"\\]', function(c)
    return escapes[c] or string.format('\\u%04x', string.byte(c))
  end) .. '"'
end

-- The payload with the failure of a job whose dependency `cause` died (batch_engine twin).
local function bury_payload(payload, cause, failed_at)
  local comma = string.find(payload, ',', 1, true)
  if string.sub(payload, 1, 9) ~= '{"retry":' or not comma then return payload end
  local failure = '{"retry_count":0,"remaining":0,"failed_at":' .. json_string(failed_at)
    .. ',"message":' .. json_string('job ' .. cause .. ', which this job waits for, died')
    .. ',"errtype":"DependencyDied"}'
  return string.sub(payload, 1, comma) .. '"failure":' .. failure .. ',' .. string.sub(payload, comma + 1)
end

-- ------------------------------------------------------------------ ends (batch_engine.end_jobs)
-- The keys of an end, set by the script that ends jobs: EK.waiting, EK.waitz, EK.edges (the
-- waiting jobs), EK.res, EK.exp, EK.busy (the reservations), EK.dead_z, EK.dead_d (the dead
-- set, for waiting jobs killed by a dead dependency; not needed when every end is a success).
-- PRE_ENDED[jid]: the script ended that reservation itself already (an ACK: endings_end.lua).
local function end_reservation(jid)
  if PRE_ENDED[jid] then
    PRE_ENDED[jid] = nil
  else
    if redis.call('HDEL', EK.res, jid) == 0 then return false end
    redis.call('ZREM', EK.exp, jid)
    redis.call('ZREM', EK.busy, jid)
  end
  F.processed = F.processed + 1
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

local function release(dep, now)
  local edges = redis.call('HGET', EK.edges, dep)
  if not edges then return end  -- no job waits for it (most jobs)
  for _, jid in ipairs(unpack_list(edges)) do
    local w = waiting_get(EK.waiting, jid)
    if w and w.remaining >= 0 then
      if w.remaining > 1 then
        w.remaining = w.remaining - 1
        waiting_put(EK.waiting, w)
      else
        redis.call('HDEL', EK.waiting, jid)
        redis.call('ZREM', EK.waitz, jid)
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
  redis.call('HDEL', EK.edges, dep)
end

-- End each of `work` ({jid, outcome, cause, and its mark when the caller read it}; dead ends
-- append the waiters they kill), as batch_engine._end_one does. now: a score string; keep:
-- seconds a finished plain mark lives.
local function end_all(work, now, keep, dead_score, failed_at)
  local head = 1
  while head <= #work do
    local e = work[head]
    head = head + 1
    local m = e.mark or mark_get(e.jid, tonumber(now))  -- e.mark: read by the caller just now
    local new_state = m and next_state(m.state, e.outcome) or nil
    local b, doomed = nil, false
    if new_state and m.bid ~= '' then
      if declared[m.bid] then
        b = batch_load(declared[m.bid], END_FIELDS)
      else  -- its batch is not declared here: durable for the sweep, and back to the caller
        local w = waiting_get(EK.waiting, e.jid)
        if w then
          w.remaining, w.doomed_by = -1, e.cause
          waiting_put(EK.waiting, w)
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
        local w = waiting_get(EK.waiting, e.jid)
        redis.call('HDEL', EK.waiting, e.jid)
        redis.call('ZREM', EK.waitz, e.jid)
        if w then
          redis.call('ZADD', EK.dead_z, dead_score, e.jid)
          redis.call('HSET', EK.dead_d, e.jid,
            lp(w.queue) .. lp(w.jobtype) .. bury_payload(w.payload, e.cause, failed_at))
          F.killed[#F.killed + 1] = e.jid
        end
      end
      local old_state = m.state
      if m.bid == '' then m.expires = fmt(tonumber(now) + keep) end
      m.state, m.updated = new_state, now
      mark_put(m, m.bid ~= '')
      m.state = old_state
      if new_state == 'success' or new_state == 'dead' then F.ended[#F.ended + 1] = e.jid end
      if b then
        count(b, m, new_state)
        settle(b, now)
      end
      if new_state == 'success' then
        release(e.jid, now)
      elseif new_state == 'dead' then
        local cause = e.cause ~= '' and e.cause or e.jid
        for _, w in ipairs(unpack_list(redis.call('HGET', EK.edges, e.jid))) do
          work[#work + 1] = {jid = w, outcome = 'dead', cause = cause}
        end
        redis.call('HDEL', EK.edges, e.jid)
      end
    end
  end
end

-- fired() as one string (lp-packed lists, then the processed count): for a script that
-- remembers its result under its call's token (_lib.lua).
local function packed_fired()
  flush_batches()
  return pack({pack(F.sched), pack(F.ended), pack(F.marked), pack(F.prop), pack(F.doomed),
    pack(F.killed), tostring(F.processed)})
end
