-- worker_update: Store.update_worker, one atomic read-modify-write of a worker record, so a
-- BEAT on one server cannot overwrite a quiet signal another server stored meanwhile.
-- KEYS[1]  {ns}:workers    SET of wids
-- KEYS[2]  {ns}:w:<wid>    STRING msgspec JSON of a WorkerRecord, with a TTL
-- ARGV[1] wid   ARGV[2] ttl seconds   ARGV[3] rss_kb   ARGV[4] last_beat   ARGV[5] state
-- ARGV[6] connections delta   ARGV[7] JSON record to create when there is none
-- An empty ARGV[3..5] or ARGV[7] means "not given".
-- Returns the changed record's JSON (also when a negative delta deleted it), or nil when
-- there was no record and nothing to create.
-- cjson keeps 14 significant digits of numbers (0.1 ms of an epoch time) and encodes an
-- empty table as {}: empty labels are left out, and the record's default ([]) fills them in.
local RANK = { running = 1, quiet = 2, terminate = 3 } -- base.WORKER_STATE_ORDER

local raw = redis.call('GET', KEYS[2])
if not raw then
  if ARGV[7] == '' then
    return nil
  end
  raw = ARGV[7]
end
local rec = cjson.decode(raw)
if ARGV[3] ~= '' then
  rec.rss_kb = tonumber(ARGV[3])
end
if ARGV[4] ~= '' then
  rec.last_beat = tonumber(ARGV[4])
end
local wanted = RANK[ARGV[5]]
if wanted and wanted > (RANK[rec.state] or 1) then
  rec.state = ARGV[5]
end
local delta = tonumber(ARGV[6])
rec.connections = (rec.connections or 0) + delta
if type(rec.labels) == 'table' and next(rec.labels) == nil then
  rec.labels = nil
end
local out = cjson.encode(rec)
if delta < 0 and rec.connections <= 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], out, 'EX', tonumber(ARGV[2]))
  redis.call('SADD', KEYS[1], ARGV[1])
end
return out
