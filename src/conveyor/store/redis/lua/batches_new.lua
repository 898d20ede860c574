-- batches_new: store a new, open batch and count it in its parent (store/batches.py).
-- KEYS[1] {ns}:b:<bid>  KEYS[2] {ns}:batches (ZSET bid by creation)  KEYS[3] {ns}:bexp
-- (ZSET bid by expires_at)  KEYS[4] {ns}:bseq (creation counter)  KEYS[5] {ns}:b:<parent>
-- KEYS[6] {ns}:bk:<parent> (SET children); KEYS[5..6] only with a parent.
-- ARGV: bid, created_at, expires_at, description, parent_bid, then the complete and the
-- success callbacks: jid, queue, jobtype, payload each ("" jid: none).
-- Returns false when stored, else the error text.
local bid, parent_bid = ARGV[1], ARGV[5]
local parent = nil
if parent_bid ~= '' then
  parent = batch_load(KEYS[5])
  if not parent then return 'no such batch ' .. parent_bid end
  if parent.committed == '1' then
    return 'batch ' .. parent_bid .. ' is committed: BATCH OPEN it to add a child'
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- this very call run again (a reply lost): done already; else a bid drawn twice
  if redis.call('HGET', KEYS[1], 'created_at') == ARGV[2] then return false end
  return 'batch ' .. bid .. ' exists'
end
redis.call('HSET', KEYS[1], 'bid', bid, 'created_at', ARGV[2], 'expires_at', ARGV[3],
  'description', ARGV[4], 'parent_bid', parent_bid, 'committed', '0', 'committed_at', '',
  'total', 0, 'pending', 0, 'failed', 0, 'complete_st', '', 'success_st', '',
  'children', 0, 'kids_complete', 0, 'kids_success', 0, 'm_complete', '0', 'm_success', '0',
  'r_complete', '0', 'r_success', '0',
  'cc_jid', ARGV[6], 'cc_queue', ARGV[7], 'cc_type', ARGV[8], 'cc_payload', ARGV[9],
  'sc_jid', ARGV[10], 'sc_queue', ARGV[11], 'sc_type', ARGV[12], 'sc_payload', ARGV[13])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), bid)
redis.call('ZADD', KEYS[3], ARGV[3], bid)
if parent then
  parent.children = parent.children + 1
  parent.kids_complete = parent.kids_complete + 1
  parent.kids_success = parent.kids_success + 1
  batch_save(parent)
  flush_batches()
  redis.call('SADD', KEYS[6], bid)
end
return false
