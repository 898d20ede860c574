-- batches_adopt: make a batch the child of another (BATCH CHILD).
-- KEYS[1] {ns}:b:<parent>  KEYS[2] {ns}:b:<child>  KEYS[3] {ns}:bk:<parent>,
-- KEYS[4..] the hashes of the parent's ancestors, nearest first, as the caller read them.
-- ARGV: parent bid, child bid, then the ancestors' bids in KEYS[4..] order.
-- Returns false when done, "retry" when the ancestors changed since they were read, else the
-- error text.
local parent_bid, child_bid = ARGV[1], ARGV[2]
local parent, child = batch_load(KEYS[1]), batch_load(KEYS[2])
if not parent then return 'no such batch ' .. parent_bid end
if not child then return 'no such batch ' .. child_bid end
if child.parent_bid == parent_bid then return false end  -- asked again: done already
if parent.committed == '1' then
  return 'batch ' .. parent_bid .. ' is committed: BATCH OPEN it to add a child'
end
if child.parent_bid ~= '' then
  return 'batch ' .. child_bid .. ' already has a parent, ' .. child.parent_bid
end
local expected = ARGV[3] or ''
if parent.parent_bid ~= expected then return 'retry' end
for i = 4, #KEYS do
  local ancestor = redis.call('HGET', KEYS[i], 'parent_bid') or ''
  if ancestor ~= (ARGV[i] or '') then return 'retry' end
end
if parent_bid == child_bid then
  return 'batch ' .. child_bid .. ' is an ancestor of ' .. parent_bid .. ': no cycles'
end
for i = 3, #ARGV do
  if ARGV[i] == child_bid then
    return 'batch ' .. child_bid .. ' is an ancestor of ' .. parent_bid .. ': no cycles'
  end
end
child.parent_bid = parent_bid
child.r_complete, child.r_success = child.m_complete, child.m_success
parent.children = parent.children + 1
if child.m_complete ~= '1' then parent.kids_complete = parent.kids_complete + 1 end
if child.m_success ~= '1' then parent.kids_success = parent.kids_success + 1 end
batch_save(child)
batch_save(parent)
flush_batches()
redis.call('SADD', KEYS[3], child_bid)
return false
