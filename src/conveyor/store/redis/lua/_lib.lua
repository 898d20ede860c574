-- Helpers prepended to every script when it is loaded (store/redis/scripts.py).
-- No keys. Encodings shared with store/redis/codec.py:
--   lp(s)        "<byte length>:<bytes>", a length-prefixed field (jids and names may hold any byte)
--   queue entry  "<reserve_for>:" .. lp(jid) .. payload
--   reservation  lp(queue) .. lp(wid) .. payload
--   set data     lp(queue) .. lp(jobtype) .. payload
-- fmt() prints a double exactly (%.17g round-trips), so scores never lose precision.
local function lp(s)
  if s == '' then return '0:' end  -- many are (a mark's role, empty lists): no number printed
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

-- Idempotent writes (store/redis/calls.py, docs/design/idempotency.md). A script whose second
-- run would change something again takes its call's token key as KEYS[1], with ARGV[1] the
-- seconds to keep the token and ARGV[2] the attempt (1, 2, ...). The first attempt that runs
-- records its result under the token (remember); any other attempt of the same call -- a retry
-- after a lost reply, or the first attempt arriving late -- finds it (replay) and returns that
-- result, changing nothing. A replay rewrites the token: a write of its own, so a WAIT sent
-- after it also covers what the first attempt wrote.
local function replay()
  local done = redis.call('GET', KEYS[1])
  if done then
    redis.call('SET', KEYS[1], done, 'KEEPTTL')
  end
  return done
end

local function remember(value)
  redis.call('SET', KEYS[1], value, 'EX', ARGV[1])
  return value
end

-- lp() of every item of a list, and back.
local function pack(items)
  local n = #items
  if n < 2 then return n == 0 and '' or lp(items[1]) end  -- no table for none or one
  local out = {}
  for i, item in ipairs(items) do out[i] = lp(item) end
  return table.concat(out)
end

local function unpack_lp(s)
  local out, pos = {}, 1
  while pos <= #s do
    out[#out + 1], pos = read_lp(s, pos)
  end
  return out
end
