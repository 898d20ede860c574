-- queue_find: look for a jid in one slice of a queue, walking from the tail towards the head.
-- KEYS[1] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload, oldest first
-- ARGV[1] jid, ARGV[2] how many entries from the tail were looked at already, ARGV[3] slice size
-- Returns {entry} when found, {false, next_skip} to go on, {} once the head is passed.
-- From the tail because nothing is ever pushed at the head: a pop (at the head) or a push (at
-- the tail) between two slices never moves an unseen entry past the walk, so a job that stays
-- queued is always found. A slice is bounded so Redis is never blocked for long.
local jid, skip, size = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local entries = redis.call('LRANGE', KEYS[1], -(skip + size), -(skip + 1))
for i = #entries, 1, -1 do
  local entry = entries[i]
  local colon = string.find(entry, ':', 1, true)
  if read_lp(entry, colon + 1) == jid then
    return {entry}
  end
end
if #entries < size then
  return {}
end
return {false, skip + size}
