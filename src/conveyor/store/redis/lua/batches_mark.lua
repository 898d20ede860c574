-- batches_mark: mark jobs being pushed; join their batches; hold back those waiting for
-- others (store/batches.py mark_jobs, batch_engine._mark_one); and queue, in the same step,
-- those found ready that the caller gave a queue entry for (a batch or tracked job's PUSH in
-- one round trip: RedisBatches.mark_enqueue_soon; enqueue.lua does the same for plain jobs).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua): a retry after a lost reply must not
-- queue the job again (its mark, found then, would say `ready`)
-- KEYS[2..6] SETTLE keys (_batches.lua), KEYS[7] {ns}:waiting, KEYS[8] {ns}:waitz (ZSET
-- waiting jids by since), KEYS[9] {ns}:edges, KEYS[10..] per batch: {ns}:b:<bid>,
-- {ns}:bj:<bid>; then, with entries: {ns}:queues, {ns}:ready and the {ns}:q:<name> of each
-- job with an entry, in ARGV order
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] now, ARGV[4] SPUBLISH or PUBLISH, ARGV[5]
-- "<origin> ", ARGV[6] number of batches, then their bids (in KEYS order), then per job:
-- jid, bid, expires_at, its queue ("" when the caller queues it) and then its entry, "1"
-- when it waits (then: queue, jobtype, due, pack_list(after), payload) or "0".
-- Returns, and remembers, pack() of: jid, result, detail, ...
local done = replay()
if done then
  return done
end
SK = 1
local now, pub, origin = ARGV[3], ARGV[4], ARGV[5]
local nb = tonumber(ARGV[6])
local jobs_key = {}
for i = 1, nb do
  declared[ARGV[6 + i]] = KEYS[8 + 2 * i]
  jobs_key[ARGV[6 + i]] = KEYS[9 + 2 * i]
end
local qk = 11 + 2 * nb  -- KEYS[10 + 2nb] {ns}:queues, [11 + 2nb] {ns}:ready, then queue keys
-- What a mark reads of its batch: whether it takes jobs, and the counters it moves.
local MARK_FIELDS = {'bid', 'committed', 'total', 'pending', 'failed'}

-- Mark one job (w: how it waits, or nil); returns its result and detail.
local function mark_one(jid, bid, expires, w, now, jobs_key)
  local existing, stale = mark_get(jid, tonumber(now))
  if existing then  -- a PUSH sent again: as its mark says
    return existing.state == 'waiting' and 'waiting' or 'ready', ''
  end
  local b, refused = nil, nil
  if bid ~= '' then
    b = batch_load(declared[bid], MARK_FIELDS)
    if not b then
      refused = 'no such batch ' .. bid
    elseif b.committed == '1' then
      refused = 'batch ' .. bid .. ' is committed: BATCH OPEN it to add jobs'
    end
  end
  local res, detail, pending, seen = 'ready', '', {}, {}
  if not refused and w then
    for _, dep in ipairs(unpack_list(w.after)) do
      if not seen[dep] then
        seen[dep] = true
        local m = mark_get(dep, tonumber(now))
        if not m then
          refused = 'after: no tracked job ' .. dep
          break
        elseif m.state == 'dead' and res ~= 'dead' then
          res, detail = 'dead', dep
        elseif m.state ~= 'success' and m.state ~= 'dead' then
          pending[#pending + 1] = dep
        end
      end
    end
    if not refused and res ~= 'dead' and #pending > 0 then res = 'waiting' end
  end
  if refused then return 'refused', refused end
  local state = ({ready = 'enqueued', waiting = 'waiting', dead = 'dead'})[res]
  if b then
    b.total = b.total + 1
    b.pending = b.pending + 1
    if state == 'dead' then b.failed = b.failed + 1 end
    batch_save(b)
    redis.call('ZADD', jobs_key, b.total, jid)
  end
  if bid ~= '' then expires = '' end  -- a batch job's mark goes with its batch
  -- a stale mark (expired, not purged yet) may be listed in {ns}:markx; no mark: not listed
  mark_put({jid = jid, state = state, updated = now, bid = bid, role = '', expires = expires},
    not stale)
  if res == 'waiting' then
    w.remaining = #pending
    waiting_put(KEYS[SK + 6], w)
    redis.call('ZADD', KEYS[SK + 7], now, jid)
    for _, dep in ipairs(pending) do
      local waiters = unpack_list(redis.call('HGET', KEYS[SK + 8], dep))
      local present = false
      for _, other in ipairs(waiters) do
        if other == jid then present = true end
      end
      if not present then
        waiters[#waiters + 1] = jid
        redis.call('HSET', KEYS[SK + 8], dep, pack_list(waiters))
      end
    end
  end
  return res, detail
end

local out = {}
local i = 7 + nb
while i <= #ARGV do
  local jid, bid, expires, queue = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local entry = nil
  if queue ~= '' then
    entry = ARGV[i + 4]
    i = i + 1
  end
  local w = nil
  if ARGV[i + 4] == '1' then
    w = {jid = jid, queue = ARGV[i + 5], jobtype = ARGV[i + 6], due = ARGV[i + 7],
      after = ARGV[i + 8], payload = ARGV[i + 9], bid = bid, doomed_by = '', since = now}
    i = i + 10
  else
    i = i + 5
  end
  local res, detail = mark_one(jid, bid, expires, w, now, jobs_key[bid])
  if entry then
    qk = qk + 1
    if res == 'ready' then
      redis.call('RPUSH', KEYS[qk], entry)
      redis.call('SADD', KEYS[10 + 2 * nb], queue)
      redis.call(pub, KEYS[11 + 2 * nb], origin .. queue)
    end
  end
  out[#out + 1] = jid
  out[#out + 1] = res
  out[#out + 1] = detail
end
flush_batches()
return remember(pack(out))
