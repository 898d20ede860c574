-- The top of a function library only (store/redis/scripts.py), after _lib.lua's helpers: it
-- runs once, when Redis loads the library, and what it builds is kept between calls.

-- lp() with each length printed once: Lua prints a number with sprintf at every `..` (a
-- batch job's scripts print about twenty). Lengths under 1024 are kept (jids, names, states).
local LENGTHS = {}

lp = function(s)
  if s == '' then return '0:' end
  local n = #s
  local length = LENGTHS[n]
  if not length then
    length = tostring(n)
    if n < 1024 then LENGTHS[n] = length end
  end
  return length .. ':' .. s
end
