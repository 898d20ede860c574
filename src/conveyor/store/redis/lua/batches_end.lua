-- batches_end: an attempt of each of these marked jobs ended (store/batches.py end_jobs,
-- batch_engine._end_one; the rules: end_all in _batches.lua). A success also ends the job's
-- reservation, as ack.lua does.
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
EK = {waiting = KEYS[6], waitz = KEYS[7], edges = KEYS[8], res = KEYS[9], exp = KEYS[10],
  busy = KEYS[11], dead_z = KEYS[13], dead_d = KEYS[14]}

local work = {}
local i = 7 + nb
while i <= #ARGV do
  work[#work + 1] = {jid = ARGV[i], outcome = ARGV[i + 1], cause = ARGV[i + 2]}
  i = i + 3
end
end_all(work, now, keep, dead_score, failed_at)
if F.processed > 0 then
  redis.call('HINCRBY', KEYS[12], 'processed', F.processed)
  redis.call('HINCRBY', KEYS[12], 'p:' .. day, F.processed)
end
return fired()
