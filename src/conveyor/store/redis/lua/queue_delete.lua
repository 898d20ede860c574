-- queue_delete: delete queued entries by jid (every entry with one of the jids).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload
-- ARGV[3..]: jids. Returns how many entries were deleted.
local done = replay()
if done then
  return tonumber(done)
end
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local doomed = {}
local start, chunk = 0, 1000
while true do
  local entries = redis.call('LRANGE', KEYS[2], start, start + chunk - 1)
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
  n = n + redis.call('LREM', KEYS[2], 1, entry)
end
remember(tostring(n))
return n
