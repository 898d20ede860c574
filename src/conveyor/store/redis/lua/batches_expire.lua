-- batches_expire: delete an expired batch, a thousand of its jobs' marks at a time.
-- KEYS[1] {ns}:b:<bid>  KEYS[2] {ns}:bj:<bid>  KEYS[3] {ns}:bk:<bid>  KEYS[4] {ns}:batches
-- KEYS[5] {ns}:bexp  KEYS[6] {ns}:bprop  KEYS[7] {ns}:marks  KEYS[8] {ns}:markx
-- ARGV: bid, now, chunk. Returns 1 when the batch is gone, 0 when more remains (call again),
-- -1 when it has not expired (reopened or committed since it was listed).
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if expires and tonumber(expires) > tonumber(ARGV[2]) then return -1 end
local jids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[3]) - 1)
for _, jid in ipairs(jids) do
  local raw = redis.call('HGET', KEYS[7], jid)
  if raw then
    local _, pos = read_lp(raw, 1)
    _, pos = read_lp(raw, pos)
    local bid = read_lp(raw, pos)
    if bid == ARGV[1] then
      redis.call('HDEL', KEYS[7], jid)
      redis.call('ZREM', KEYS[8], jid)
    end
  end
end
if #jids > 0 then redis.call('ZREM', KEYS[2], unpack(jids)) end
if #jids == tonumber(ARGV[3]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
return 1
