-- workers: save, delete or prune worker records (shared by every server).
-- KEYS[1]   {ns}:workers    SET of wids
-- KEYS[2..] {ns}:w:<wid>    STRING msgspec JSON of a WorkerRecord, with a TTL
-- ARGV[1] mode:
--   "save"   ARGV[2] wid, ARGV[3] json, ARGV[4] ttl seconds   (KEYS[2] is the worker)
--   "delete" ARGV[2] wid                                       (returns 1 if it existed)
--   "prune"  ARGV[2..] wids in KEYS[2..] order: forget wids whose record expired
local mode = ARGV[1]
if mode == 'save' then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
  redis.call('SADD', KEYS[1], ARGV[2])
  return 1
elseif mode == 'delete' then
  redis.call('SREM', KEYS[1], ARGV[2])
  return redis.call('DEL', KEYS[2])
end
local n = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    n = n + redis.call('SREM', KEYS[1], ARGV[i])
  end
end
return n
