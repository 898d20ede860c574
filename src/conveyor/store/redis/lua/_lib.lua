-- Helpers prepended to every script when it is loaded (store/redis/scripts.py).
-- No keys. Encodings shared with store/redis/codec.py:
--   lp(s)        "<byte length>:<bytes>", a length-prefixed field (jids and names may hold any byte)
--   queue entry  "<reserve_for>:" .. lp(jid) .. payload
--   reservation  lp(queue) .. lp(wid) .. payload
--   set data     lp(queue) .. lp(jobtype) .. payload
-- fmt() prints a double exactly (%.17g round-trips), so scores never lose precision.
local function lp(s)
  return #s .. ':' .. s
end

local function read_lp(s, pos)
  local colon = string.find(s, ':', pos, true)
  local n = tonumber(string.sub(s, pos, colon - 1))
  return string.sub(s, colon + 1, colon + n), colon + n + 1
end

local function fmt(x)
  return string.format('%.17g', x)
end

local function same_score(current, wanted)
  return current and tonumber(current) == tonumber(wanted)
end

-- RPUSH a slice of ARGV in chunks: unpack() is limited by the Lua C stack.
local function rpush_range(key, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + 499, last)
    redis.call('RPUSH', key, unpack(ARGV, i, j))
    i = j + 1
  end
end
