-- endings_take: remove queued entries by jid and return them, oldest first (store/endings.py).
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua): what it took, for its retries
-- KEYS[2] {ns}:q:<name> LIST of entries "<reserve_for>:" lp(jid) payload
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3..] jids. Walks the queue once, as
-- queue_delete.lua does.
local done = replay()
if done then
  return unpack_lp(done)
end
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local taken = {}
local start, chunk = 0, 1000
while true do
  local entries = redis.call('LRANGE', KEYS[2], start, start + chunk - 1)
  for _, entry in ipairs(entries) do
    local colon = string.find(entry, ':', 1, true)
    local jid = read_lp(entry, colon + 1)
    if wanted[jid] then taken[#taken + 1] = entry end
  end
  if #entries < chunk then break end
  start = start + chunk
end
for _, entry in ipairs(taken) do
  redis.call('LREM', KEYS[2], 1, entry)
end
remember(pack(taken))
return taken
