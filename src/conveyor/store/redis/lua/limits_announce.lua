-- limits_announce: tell every server that queues may have room (a slot freed, a limit raised).
-- KEYS[1] {ns}:ready wake-up channel; ARGV[1] SPUBLISH or PUBLISH, ARGV[2] "<origin> ",
-- ARGV[3..] queue names.
for i = 3, #ARGV do
  redis.call(ARGV[1], KEYS[1], ARGV[2] .. ARGV[i])
end
return 1
