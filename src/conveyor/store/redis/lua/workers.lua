-- workers: save, delete or prune worker records (shared by every server).
-- KEYS[1]   {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2]   {ns}:workers    SET of wids
-- KEYS[3..] {ns}:w:<wid>    STRING msgspec JSON of a WorkerRecord, with a TTL
-- ARGV[3] mode:
--   "save"   ARGV[4] wid, ARGV[5] json, ARGV[6] ttl seconds   (KEYS[3] is the worker)
--   "delete" ARGV[4] wid, ARGV[5] silent_before or ""         (returns 1 if it deleted it)
--            with ARGV[5], only a record whose last_beat is older: a BEAT that landed on
--            another server since the reaper listed the workers keeps the worker
--   "prune"  ARGV[4..] wids in KEYS[3..] order: forget wids whose record expired
local done = replay()
if done then
  return tonumber(done)
end
local mode = ARGV[3]
local n = 0
if mode == 'save' then
  redis.call('SET', KEYS[3], ARGV[5], 'EX', tonumber(ARGV[6]))
  redis.call('SADD', KEYS[2], ARGV[4])
  n = 1
elseif mode == 'delete' then
  local raw = redis.call('GET', KEYS[3])
  local silent = ARGV[5] == '' or not raw or (cjson.decode(raw).last_beat or 0) < tonumber(ARGV[5])
  if silent then
    redis.call('SREM', KEYS[2], ARGV[4])
    n = redis.call('DEL', KEYS[3])
  end
else
  for i = 4, #ARGV do
    if redis.call('EXISTS', KEYS[i - 1]) == 0 then
      n = n + redis.call('SREM', KEYS[2], ARGV[i])
    end
  end
end
remember(tostring(n))
return n
