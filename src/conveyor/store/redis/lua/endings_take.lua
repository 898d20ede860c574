-- endings_take: remove queued entries by jid and return them, oldest first (store/endings.py).
-- KEYS[1] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload
-- ARGV: jids. Walks the queue once, as queue_delete.lua does.
local wanted = {}
for _, jid in ipairs(ARGV) do wanted[jid] = true end
local taken = {}
local start, chunk = 0, 1000
while true do
  local entries = redis.call('LRANGE', KEYS[1], start, start + chunk - 1)
  for _, entry in ipairs(entries) do
    local colon = string.find(entry, ':', 1, true)
    local jid = read_lp(entry, colon + 1)
    if wanted[jid] then taken[#taken + 1] = entry end
  end
  if #entries < chunk then break end
  start = start + chunk
end
for _, entry in ipairs(taken) do
  redis.call('LREM', KEYS[1], 1, entry)
end
return taken
