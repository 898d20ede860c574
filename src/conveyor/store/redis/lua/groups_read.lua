-- groups_read: aggregating groups with their numbers (see groups.lua), read in one step.
-- KEYS[1] {ns}:gdue   ZSET  group key by due_at
-- KEYS[2] {ns}:gmeta  HASH  group key -> "size first_at last_at max_size max_delay grace seq"
-- ARGV[1] mode:
--   "due"  ARGV[2] now, ARGV[3] limit   groups due by now, soonest first
--   "page" ARGV[2] offset, ARGV[3] limit  every group, soonest due first
--   "keys" ARGV[2..] group keys
-- Returns {total, key, due_at, meta, key, due_at, meta, ...} (total: how many groups exist).
local mode = ARGV[1]
local keys
if mode == 'due' then
  keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
elseif mode == 'page' then
  local first = tonumber(ARGV[2])
  keys = redis.call('ZRANGE', KEYS[1], first, first + tonumber(ARGV[3]) - 1)
else
  keys = {}
  for i = 2, #ARGV do keys[#keys + 1] = ARGV[i] end
end
local out = {redis.call('ZCARD', KEYS[1])}
for _, key in ipairs(keys) do
  local due = redis.call('ZSCORE', KEYS[1], key)
  local meta = redis.call('HGET', KEYS[2], key)
  if due and meta then
    out[#out + 1] = key
    out[#out + 1] = due
    out[#out + 1] = meta
  end
end
return out
