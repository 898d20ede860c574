-- queue_delete: delete queued entries by jid (every entry with one of the jids).
-- KEYS[1] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload
-- ARGV: jids. Returns how many entries were deleted.
local wanted = {}
for _, jid in ipairs(ARGV) do wanted[jid] = true end
local doomed = {}
local start, chunk = 0, 1000
while true do
  local entries = redis.call('LRANGE', KEYS[1], start, start + chunk - 1)
  for _, entry in ipairs(entries) do
    local colon = string.find(entry, ':', 1, true)
    local jid = read_lp(entry, colon + 1)
    if wanted[jid] then doomed[#doomed + 1] = entry end
  end
  if #entries < chunk then break end
  start = start + chunk
end
local n = 0
for _, entry in ipairs(doomed) do
  n = n + redis.call('LREM', KEYS[1], 1, entry)
end
return n
