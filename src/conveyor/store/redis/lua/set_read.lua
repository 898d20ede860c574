-- set_read: read entries of a sorted set with their data in one consistent step.
-- KEYS[1] {ns}:s:<set> ZSET jid by score
-- KEYS[2] {ns}:d:<set> HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV[1] mode:
--   "due"  ARGV[2] now, ARGV[3] limit              (lowest score first)
--   "rank" ARGV[2] start, ARGV[3] stop, ARGV[4] "1" for descending
--   "jids" ARGV[2..] jids
-- Returns {zcard, jid, score, data, ...}
local mode = ARGV[1]
local out = {redis.call('ZCARD', KEYS[1])}
local function emit(jid, score)
  local data = redis.call('HGET', KEYS[2], jid)
  if data and score then
    out[#out + 1] = jid
    out[#out + 1] = score
    out[#out + 1] = data
  end
end
local pairs_
if mode == 'due' then
  pairs_ = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0,
    tonumber(ARGV[3]))
elseif mode == 'rank' then
  if ARGV[4] == '1' then
    pairs_ = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3], 'REV', 'WITHSCORES')
  else
    pairs_ = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3], 'WITHSCORES')
  end
else
  for i = 2, #ARGV do
    emit(ARGV[i], redis.call('ZSCORE', KEYS[1], ARGV[i]))
  end
  return out
end
for i = 1, #pairs_, 2 do
  emit(pairs_[i], pairs_[i + 1])
end
return out
