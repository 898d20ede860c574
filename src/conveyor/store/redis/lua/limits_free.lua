-- limits_free: reservations ended (ACK, FAIL, expiry): free their throttle slots and tell
-- every server their queues may have room (store/limits.py).
-- KEYS[1] {ns}:ready wake-up channel, then per reservation: {ns}:tq:<queue> (the queue's
-- slots) and {ns}:tw:<queue>:<wid> (its worker's slots of the queue).
-- ARGV[1] SPUBLISH or PUBLISH, ARGV[2] "<origin> ", then per reservation: queue, jid.
local woke = {}
for i = 3, #ARGV, 2 do  -- the reservation's keys are KEYS[i - 1] and KEYS[i]
  redis.call('ZREM', KEYS[i - 1], ARGV[i + 1])
  redis.call('ZREM', KEYS[i], ARGV[i + 1])
  woke[ARGV[i]] = true
end
for name, _ in pairs(woke) do
  redis.call(ARGV[1], KEYS[1], ARGV[2] .. name)
end
return 1
