-- workers: save, delete or prune worker records (shared by every server).
-- KEYS[1]   {ns}:workers    SET of wids
-- KEYS[2..] {ns}:w:<wid>    STRING msgspec JSON of a WorkerRecord, with a TTL
-- ARGV[1] mode:
--   "save"   ARGV[2] wid, ARGV[3] json, ARGV[4] ttl seconds   (KEYS[2] is the worker)
--   "delete" ARGV[2] wid, ARGV[3] silent_before or ""         (returns 1 if it deleted it)
--            with ARGV[3], only a record whose last_beat is older: a BEAT that landed on
--            another server since the reaper listed the workers keeps the worker
--   "prune"  ARGV[2..] wids in KEYS[2..] order: forget wids whose record expired
local mode = ARGV[1]
if mode == 'save' then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4]))
  redis.call('SADD', KEYS[1], ARGV[2])
  return 1
elseif mode == 'delete' then
  if ARGV[3] ~= nil and ARGV[3] ~= '' then
    local raw = redis.call('GET', KEYS[2])
    if raw and (cjson.decode(raw).last_beat or 0) >= tonumber(ARGV[3]) then
      return 0
    end
  end
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
