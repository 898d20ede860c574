-- set_read: read entries of a sorted set with their data in one consistent step.
-- KEYS[1] {ns}:s:<set> ZSET jid by score
-- KEYS[2] {ns}:d:<set> HASH jid -> lp(queue) lp(jobtype) payload
-- ARGV[1] mode:
--   "due"  ARGV[2] now, ARGV[3] limit              (lowest score first)
--   "rank" ARGV[2] start, ARGV[3] stop, ARGV[4] "1" for descending
--   "jids" ARGV[2..] jids
--   "after" ARGV[2] score, ARGV[3] jid, ARGV[4] its rank, ARGV[5] count, ARGV[6] "1" for
--          descending: the count entries that follow the entry (score, jid), if it is still
--          there with that score and that rank (in that order); else {-1}.
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
elseif mode == 'after' then
  local rank
  if ARGV[6] == '1' then
    rank = redis.call('ZREVRANK', KEYS[1], ARGV[3])
  else
    rank = redis.call('ZRANK', KEYS[1], ARGV[3])
  end
  local score = redis.call('ZSCORE', KEYS[1], ARGV[3])
  if not rank or rank ~= tonumber(ARGV[4]) or tonumber(score) ~= tonumber(ARGV[2]) then
    return {-1}  -- the set changed at or before the entry: the caller reads from the start
  end
  local stop = rank + tonumber(ARGV[5])
  if ARGV[6] == '1' then
    pairs_ = redis.call('ZRANGE', KEYS[1], rank + 1, stop, 'REV', 'WITHSCORES')
  else
    pairs_ = redis.call('ZRANGE', KEYS[1], rank + 1, stop, 'WITHSCORES')
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
