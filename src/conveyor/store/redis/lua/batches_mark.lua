-- batches_mark: mark jobs being pushed; join their batches; hold back those waiting for
-- others (store/batches.py mark_jobs, batch_engine._mark_one).
-- KEYS[1..5] SETTLE keys (_batches.lua), KEYS[6] {ns}:waiting, KEYS[7] {ns}:waitz (ZSET
-- waiting jids by since), KEYS[8] {ns}:edges, KEYS[9..] per batch: {ns}:b:<bid>, {ns}:bj:<bid>
-- ARGV[1] now, ARGV[2] number of batches, then their bids (in KEYS order), then per job:
-- jid, bid, expires_at, "1" when it waits (then: queue, jobtype, due, pack_list(after),
-- payload) or "0".
-- Returns a flat array: jid, result, detail, ...
local now = ARGV[1]
local nb = tonumber(ARGV[2])
local jobs_key = {}
for i = 1, nb do
  declared[ARGV[2 + i]] = KEYS[7 + 2 * i]
  jobs_key[ARGV[2 + i]] = KEYS[8 + 2 * i]
end
local out = {}
local function result(jid, res, detail)
  out[#out + 1] = jid
  out[#out + 1] = res
  out[#out + 1] = detail
end
local i = 3 + nb
while i <= #ARGV do
  local jid, bid, expires, waits = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local w = nil
  if waits == '1' then
    w = {jid = jid, queue = ARGV[i + 4], jobtype = ARGV[i + 5], due = ARGV[i + 6],
      after = ARGV[i + 7], payload = ARGV[i + 8], bid = bid, doomed_by = '', since = now}
    i = i + 9
  else
    i = i + 4
  end
  local existing = mark_get(jid, tonumber(now))
  local b = nil
  if existing then
    result(jid, existing.state == 'waiting' and 'waiting' or 'ready', '')
  else
    local refused = nil
    if bid ~= '' then
      b = batch_load(declared[bid])
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
    if refused then
      result(jid, 'refused', refused)
    else
      local state = ({ready = 'enqueued', waiting = 'waiting', dead = 'dead'})[res]
      if b then
        b.total = b.total + 1
        b.pending = b.pending + 1
        if state == 'dead' then b.failed = b.failed + 1 end
        batch_save(b)
        redis.call('ZADD', jobs_key[bid], b.total, jid)
      end
      if bid ~= '' then expires = '' end  -- a batch job's mark goes with its batch
      mark_put({jid = jid, state = state, updated = now, bid = bid, role = '', expires = expires})
      if res == 'waiting' then
        w.remaining = #pending
        waiting_put(KEYS[6], w)
        redis.call('ZADD', KEYS[7], now, jid)
        for _, dep in ipairs(pending) do
          local waiters = unpack_list(redis.call('HGET', KEYS[8], dep))
          local present = false
          for _, other in ipairs(waiters) do
            if other == jid then present = true end
          end
          if not present then
            waiters[#waiters + 1] = jid
            redis.call('HSET', KEYS[8], dep, pack_list(waiters))
          end
        end
      end
      result(jid, res, detail)
    end
  end
end
flush_batches()
return out
