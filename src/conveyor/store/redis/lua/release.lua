-- release: give back the jobs a reserve call took when its caller never got them (its reply
-- was lost and no retry got an answer, or the FETCH was cancelled meanwhile).
-- KEYS[1]   {ns}:op:<token> the reserve call's token: the jids it reserved, lp() each
-- KEYS[2]   {ns}:res      HASH jid -> lp(queue) lp(wid) payload
-- KEYS[3]   {ns}:exp      ZSET jid scored by expires_at
-- KEYS[4]   {ns}:busy     ZSET jid scored by reserved_at
-- KEYS[5]   {ns}:ready    wake-up channel
-- KEYS[6..] {ns}:q:<name> the queues the call reserved from
-- ARGV[1] token TTL, ARGV[2] SPUBLISH or PUBLISH, ARGV[3] "<origin> ", ARGV[4] wid,
-- ARGV[5] the call's now, ARGV[6..] queue names in KEYS[6..] order
-- The token is set to "nothing reserved" first, so any attempt of the call still on its way
-- replays that and reserves nothing. A job goes back to the head of its queue only if it is
-- still reserved by that call (same wid and reservation time). Returns how many went back.
local done = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], '', 'EX', ARGV[1])
if not done or done == '' then
  return 0
end
local key_of = {}
for i = 6, #ARGV do key_of[ARGV[i]] = KEYS[i] end
local jids = unpack_lp(done)
local n, woke = 0, {}
for i = #jids, 1, -1 do
  local jid = jids[i]
  local record = redis.call('HGET', KEYS[2], jid)
  if record and same_score(redis.call('ZSCORE', KEYS[4], jid), ARGV[5]) then
    local queue, pos = read_lp(record, 1)
    local wid, start = read_lp(record, pos)
    if wid == ARGV[4] and key_of[queue] then
      local expires = tonumber(redis.call('ZSCORE', KEYS[3], jid))
      local reserve_for = math.floor(expires - tonumber(ARGV[5]) + 0.5)
      redis.call('LPUSH', key_of[queue], reserve_for .. ':' .. lp(jid) .. string.sub(record, start))
      redis.call('HDEL', KEYS[2], jid)
      redis.call('ZREM', KEYS[3], jid)
      redis.call('ZREM', KEYS[4], jid)
      woke[queue] = true
      n = n + 1
    end
  end
end
for name, _ in pairs(woke) do
  redis.call(ARGV[2], KEYS[5], ARGV[3] .. name)
end
return n
