-- batches_state: open or commit a batch, and fire what a commit makes due.
-- KEYS[1..5] SETTLE keys (_batches.lua), KEYS[6] {ns}:b:<bid>, KEYS[7] {ns}:bexp
-- ARGV: "open" | "commit", bid, now, expires_at (commit only).
-- Returns false when there is no such batch, else the fired lists (_batches.lua).
local b = batch_load(KEYS[6])
if not b then return false end
if ARGV[1] == 'open' then
  b.committed = '0'
  batch_save(b)
  return fired()
end
b.committed = '1'
b.committed_at = ARGV[3]
b.expires_at = ARGV[4]
redis.call('ZADD', KEYS[7], ARGV[4], ARGV[2])
settle(b, ARGV[3])
return fired()
