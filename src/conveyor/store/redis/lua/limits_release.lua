-- limits_release: free the throttle slots of a worker that is gone (store/limits.py).
-- KEYS: per queue, {ns}:tq:<name> (the queue's slots) and {ns}:tw:<name>:<wid> (the
-- worker's slots of it), then KEYS[#KEYS] {ns}:lkeys.
-- Returns the 1-based numbers of the queues where slots were freed.
local freed = {}
for k = 1, #KEYS - 1, 2 do
  local mine = redis.call('ZRANGE', KEYS[k + 1], 0, -1)
  if #mine > 0 then
    for _, jid in ipairs(mine) do
      redis.call('ZREM', KEYS[k], jid)
    end
    freed[#freed + 1] = (k + 1) / 2
  end
  redis.call('DEL', KEYS[k + 1])
  redis.call('SREM', KEYS[#KEYS], KEYS[k + 1])
end
return freed
