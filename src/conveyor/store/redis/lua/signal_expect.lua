-- signal_expect: note that a server waits for a signal of one key (store/signals.py,
-- Signals.expect), so that a script which signals only what is waited for (endings_end.lua:
-- the result signal of an ACK) publishes it. Redis's own clock dates every registration, so
-- the servers' clocks need not agree. Sent again after a lost reply it changes nothing more.
-- KEYS[1] {ns}:sw:<topic>  ZSET key by the time its last registration expires
-- ARGV[1] the key, ARGV[2] seconds the registration lasts
-- Expired registrations (a server that died while it waited, or stopped waiting) are dropped
-- here, and the whole set expires with its last registration.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local seconds = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now))
redis.call('ZADD', KEYS[1], 'GT', string.format('%.6f', now + seconds), ARGV[1])
local ms = math.ceil(seconds * 1000)
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('PEXPIRE', KEYS[1], ms)
end
return 1
