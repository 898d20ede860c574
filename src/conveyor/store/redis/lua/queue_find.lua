-- queue_find: look for jids in one slice of a queue, walking from the tail towards the head.
-- KEYS[1] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload, oldest first
-- ARGV[1] how many entries from the tail were looked at already, ARGV[2] slice size,
-- ARGV[3..] the jids
-- Returns {next_skip, entry, ...}: the entries found in this slice; next_skip is -1 once the
-- head is passed.
-- From the tail because nothing is ever pushed at the head: a pop (at the head) or a push (at
-- the tail) between two slices never moves an unseen entry past the walk, so a job that stays
-- queued is always found. A slice is bounded so Redis is never blocked for long.
local skip, size = tonumber(ARGV[1]), tonumber(ARGV[2])
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local entries = redis.call('LRANGE', KEYS[1], -(skip + size), -(skip + 1))
local out = {#entries < size and -1 or skip + size}
for i = #entries, 1, -1 do
  local entry = entries[i]
  local colon = string.find(entry, ':', 1, true)
  if wanted[read_lp(entry, colon + 1)] then
    out[#out + 1] = entry
  end
end
return out
