-- batches_propagate: count in its parent the milestones a child reached, once.
-- KEYS[1..5] SETTLE keys (_batches.lua), KEYS[6] {ns}:b:<child>, KEYS[7] {ns}:b:<parent>
-- ARGV: child bid, parent bid (as the caller read it), now.
-- Returns "retry" when the child's parent is not the one declared, else the fired lists.
local child = batch_load(KEYS[6])
if not child or child.parent_bid == '' then
  redis.call('SREM', KEYS[5], ARGV[1])
  return fired()
end
if child.parent_bid ~= ARGV[2] then return 'retry' end
local parent = batch_load(KEYS[7])
if not parent then
  redis.call('SREM', KEYS[5], ARGV[1])
  return fired()
end
if child.m_complete == '1' and child.r_complete ~= '1' then
  child.r_complete = '1'
  parent.kids_complete = parent.kids_complete - 1
end
if child.m_success == '1' and child.r_success ~= '1' then
  child.r_success = '1'
  parent.kids_success = parent.kids_success - 1
end
batch_save(child)
redis.call('SREM', KEYS[5], ARGV[1])
settle(parent, ARGV[3])
return fired()
