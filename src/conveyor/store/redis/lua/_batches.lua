-- Helpers of the batches_*.lua scripts, prepended to each of them after _lib.lua
-- (store/redis/scripts.py). The rules mirror store/batch_engine.py step for step; the key
-- layout is in store/redis/batches.py. Every script that may fire callbacks takes the five
-- SETTLE keys first:
--   KEYS[1] {ns}:marks         HASH jid -> lp(state) lp(updated_at) lp(bid) lp(role) lp(expires)
--   KEYS[2] {ns}:markx         ZSET jid by expires_at (marks that expire)
--   KEYS[3] {ns}:s:scheduled   KEYS[4] {ns}:d:scheduled   the scheduled set (callbacks,
--                              released jobs go there, due now, for the promoter)
--   KEYS[5] {ns}:bprop         SET children whose parent has a milestone to count
-- Batch hashes are declared by the caller; `declared[bid]` is the key of each.

local F = {sched = {}, ended = {}, marked = {}, prop = {}, doomed = {}, killed = {}, processed = 0}
local declared = {}

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

local function mark_get(jid, now)
  local raw = redis.call('HGET', KEYS[1], jid)
  if not raw then return nil end
  local m, pos = {jid = jid}, 1
  m.state, pos = read_lp(raw, pos)
  m.updated, pos = read_lp(raw, pos)
  m.bid, pos = read_lp(raw, pos)
  m.role, pos = read_lp(raw, pos)
  m.expires = read_lp(raw, pos)
  if m.expires ~= '' and tonumber(m.expires) <= now then return nil end
  return m
end

local function mark_put(m)
  redis.call('HSET', KEYS[1], m.jid, lp(m.state) .. lp(m.updated) .. lp(m.bid) .. lp(m.role) .. lp(m.expires))
  if m.expires == '' or m.bid ~= '' then  -- a batch job's mark goes with its batch
    redis.call('ZREM', KEYS[2], m.jid)
  else
    redis.call('ZADD', KEYS[2], m.expires, m.jid)
  end
end

local UNFINISHED = {enqueued = true, waiting = true, failed = true}

-- ------------------------------------------------------------------ batches

local BFIELDS = {'bid', 'created_at', 'expires_at', 'description', 'parent_bid', 'committed',
  'committed_at', 'total', 'pending', 'failed', 'complete_st', 'success_st', 'children',
  'kids_complete', 'kids_success', 'm_complete', 'm_success', 'r_complete', 'r_success',
  'cc_jid', 'cc_queue', 'cc_type', 'cc_payload', 'sc_jid', 'sc_queue', 'sc_type', 'sc_payload'}
local INTS = {'total', 'pending', 'failed', 'children', 'kids_complete', 'kids_success'}
local SAVED = {'expires_at', 'parent_bid', 'committed', 'committed_at', 'total', 'pending',
  'failed', 'complete_st', 'success_st', 'children', 'kids_complete', 'kids_success',
  'm_complete', 'm_success', 'r_complete', 'r_success'}

local LOADED, DIRTY = {}, {}

-- A run reads each batch once and writes it once (flush_batches), however many of its jobs
-- it moves: a PUSHB of 1,000 jobs into one batch does not rewrite its hash 1,000 times.
local function batch_load(key)
  if not key then return nil end
  if LOADED[key] ~= nil then return LOADED[key] or nil end
  if redis.call('EXISTS', key) == 0 then
    LOADED[key] = false
    return nil
  end
  local values = redis.call('HMGET', key, unpack(BFIELDS))
  local b = {key = key}
  for i, field in ipairs(BFIELDS) do b[field] = values[i] or '' end
  for _, field in ipairs(INTS) do b[field] = tonumber(b[field]) or 0 end
  LOADED[key] = b
  return b
end

local function batch_save(b)
  DIRTY[b.key] = b
end

local function flush_batches()
  for key, b in pairs(DIRTY) do
    local args = {}
    for _, field in ipairs(SAVED) do
      args[#args + 1] = field
      args[#args + 1] = tostring(b[field])
    end
    redis.call('HSET', key, unpack(args))
  end
  DIRTY = {}
end

local function fired()
  flush_batches()
  return {F.sched, F.ended, F.marked, F.prop, F.doomed, F.killed, F.processed}
end

local function schedule(score, jid, queue, jobtype, payload)
  redis.call('ZADD', KEYS[3], score, jid)
  redis.call('HSET', KEYS[4], jid, lp(queue) .. lp(jobtype) .. payload)
  local n = #F.sched
  F.sched[n + 1], F.sched[n + 2], F.sched[n + 3] = score, jid, queue
  F.sched[n + 4], F.sched[n + 5] = jobtype, payload
end

local function call_back(b, prefix, role, now)
  local jid = b[prefix .. '_jid']
  schedule(now, jid, b[prefix .. '_queue'], b[prefix .. '_type'], b[prefix .. '_payload'])
  mark_put({jid = jid, state = 'enqueued', updated = now, bid = b.bid, role = role,
    expires = ''})
  F.marked[#F.marked + 1] = jid
end

local function milestone(b)
  if b.parent_bid ~= '' and redis.call('SADD', KEYS[5], b.bid) == 1 then
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
