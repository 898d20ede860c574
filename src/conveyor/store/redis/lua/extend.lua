-- extend: set the expiry of an existing reservation.
-- KEYS[1] {ns}:res HASH jid -> reservation
-- KEYS[2] {ns}:exp ZSET jid by expires_at
-- ARGV[1] jid, ARGV[2] expires_at. Returns 1, or 0 when there is no reservation.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
