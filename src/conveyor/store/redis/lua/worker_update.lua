-- worker_update: Store.update_worker, one atomic read-modify-write of a worker record, so a
-- BEAT on one server cannot overwrite a quiet signal another server stored meanwhile.
-- KEYS[1]  {ns}:op:<token> this call's token (_lib.lua); ARGV[1] its TTL, ARGV[2] the attempt
-- KEYS[2]  {ns}:workers    SET of wids
-- KEYS[3]  {ns}:w:<wid>    STRING msgspec JSON of a WorkerRecord, with a TTL
-- ARGV[3] wid   ARGV[4] ttl seconds   ARGV[5] rss_kb   ARGV[6] last_beat   ARGV[7] state
-- ARGV[8] connections delta   ARGV[9] JSON record to create when there is none
-- An empty ARGV[5..7] or ARGV[9] means "not given".
-- Returns the changed record's JSON (also when a negative delta deleted it), or nil when
-- there was no record and nothing to create.
-- cjson keeps 14 significant digits of numbers (0.1 ms of an epoch time) and encodes an
-- empty table as {}: empty labels are left out, and the record's default ([]) fills them in.
local RANK = { running = 1, quiet = 2, terminate = 3 } -- base.WORKER_STATE_ORDER

local done = replay()
if done then
  if done == '' then return nil end
  return done
end
local raw = redis.call('GET', KEYS[3])
if not raw then
  if ARGV[9] == '' then
    remember('')
    return nil
  end
  raw = ARGV[9]
end
local rec = cjson.decode(raw)
if ARGV[5] ~= '' then
  rec.rss_kb = tonumber(ARGV[5])
end
if ARGV[6] ~= '' then
  rec.last_beat = tonumber(ARGV[6])
end
local wanted = RANK[ARGV[7]]
if wanted and wanted > (RANK[rec.state] or 1) then
  rec.state = ARGV[7]
end
local delta = tonumber(ARGV[8])
rec.connections = (rec.connections or 0) + delta
if type(rec.labels) == 'table' and next(rec.labels) == nil then
  rec.labels = nil
end
local out = cjson.encode(rec)
if delta < 0 and rec.connections <= 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], out, 'EX', tonumber(ARGV[4]))
  redis.call('SADD', KEYS[2], ARGV[3])
end
return remember(out)
