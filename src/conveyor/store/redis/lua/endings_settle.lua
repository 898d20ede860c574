-- endings_settle: the ACK of one job whose reservation this server noted at its FETCH, with
-- what its job asked to store (RedisSoon.ack_settled_soon): endings_end.lua's "ack" of one
-- jid with its record, for the short way's case only (no throttled queue, no marks, no
-- payload sent back), so that Redis runs a few lines instead of endings_end's general loop.
-- KEYS[1] {ns}:op:<token> this call's token (_lib.lua): what it returned, for its retries
-- KEYS[2] {ns}:res  KEYS[3] {ns}:exp  KEYS[4] {ns}:busy  KEYS[5] {ns}:stats (as ack.lua)
-- KEYS[6] {ns}:s:completed ZSET, KEYS[7] {ns}:d:completed HASH (as endings_end.lua's keep)
-- KEYS[8] {ns}:r:<space>, KEYS[9] {ns}:rx:<space>, KEYS[10] {ns}:rspaces (as records_put.lua)
-- KEYS[11] {ns}:signals (as signal_publish.lua), KEYS[12] {ns}:sw:<topic> (signal_expect.lua)
-- ARGV[1] token TTL, ARGV[2] attempt, ARGV[3] day, ARGV[4] SPUBLISH or PUBLISH, ARGV[5] jid,
-- ARGV[6] lp(queue) lp(wid) and ARGV[7] reserved_at: the reservation the record was built
-- from; ARGV[8] the record's key ("": none), ARGV[9] its value, ARGV[10] its expires_at ("":
-- never), ARGV[11] its space; ARGV[12] the completed entry's score ("": none), ARGV[13] its
-- data; ARGV[14] the start of the result signal ("<origin> <topic>", "": none), published
-- with the jid only when a server waits for it (its registration is used up).
-- Returns, and remembers: "1" ended (and stored), "0" no such reservation (nothing done), "s"
-- the reservation is another one (the job was reserved again since: nothing done, for the
-- caller to read it and ACK again, as endings_end.lua's stale; checked only when there is
-- something to store, as there).
local done = replay()
if done then
  return done
end
local jid = ARGV[5]
local record = redis.call('HGET', KEYS[2], jid)
if not record then
  return remember('0')
end
local check = ARGV[6]
if (ARGV[8] ~= '' or ARGV[12] ~= '') and (string.sub(record, 1, #check) ~= check
    or tonumber(redis.call('ZSCORE', KEYS[4], jid)) ~= tonumber(ARGV[7])) then
  return remember('s')
end
redis.call('HDEL', KEYS[2], jid)
redis.call('ZREM', KEYS[3], jid)
redis.call('ZREM', KEYS[4], jid)
if ARGV[12] ~= '' then
  redis.call('ZADD', KEYS[6], ARGV[12], jid)
  redis.call('HSET', KEYS[7], jid, ARGV[13])
end
local key = ARGV[8]
if key ~= '' then
  local expires = ARGV[10]
  redis.call('HSET', KEYS[8], key, lp(expires) .. ARGV[9])
  if expires == '' then
    redis.call('ZREM', KEYS[9], key)
  else
    redis.call('ZADD', KEYS[9], expires, key)
  end
  redis.call('SADD', KEYS[10], ARGV[11])
end
redis.call('HINCRBY', KEYS[5], 'processed', 1)
redis.call('HINCRBY', KEYS[5], 'p:' .. ARGV[3], 1)
if ARGV[14] ~= '' and redis.call('ZREM', KEYS[12], jid) == 1 then
  redis.call(ARGV[4], KEYS[11], ARGV[14] .. ' ' .. cjson.encode({jid}))
end
return remember('1')
