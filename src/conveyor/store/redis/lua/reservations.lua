-- reservations: read reservations consistently (record, expiry and start in one step).
-- KEYS[1] {ns}:res   HASH jid -> lp(queue) lp(wid) payload
-- KEYS[2] {ns}:exp   ZSET jid by expires_at
-- KEYS[3] {ns}:busy  ZSET jid by reserved_at
-- ARGV[1] mode:
--   "jids"    ARGV[2..] jids
--   "expired" ARGV[2] now, ARGV[3] limit      (oldest expiry first)
--   "page"    ARGV[2] offset, ARGV[3] limit   (by reserved_at)
-- Returns {total, jid, record, expires_at, reserved_at, ...}; total is only set for "page".
local mode = ARGV[1]
local jids, total = {}, 0
if mode == 'jids' then
  for i = 2, #ARGV do jids[#jids + 1] = ARGV[i] end
elseif mode == 'expired' then
  jids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
else
  local offset, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
  total = redis.call('ZCARD', KEYS[3])
  if limit > 0 then
    jids = redis.call('ZRANGE', KEYS[3], offset, offset + limit - 1)
  end
end
local out = {total}
for _, jid in ipairs(jids) do
  local record = redis.call('HGET', KEYS[1], jid)
  if record then
    out[#out + 1] = jid
    out[#out + 1] = record
    out[#out + 1] = redis.call('ZSCORE', KEYS[2], jid)
    out[#out + 1] = redis.call('ZSCORE', KEYS[3], jid)
  end
end
return out
