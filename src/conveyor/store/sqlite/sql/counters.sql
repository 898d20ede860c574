-- Counters: counters(day, processed, failures); day '' is the running total.

-- name: add_counts
INSERT INTO counters (day, processed, failures) VALUES (?, ?, ?)
ON CONFLICT (day) DO UPDATE SET
    processed = processed + excluded.processed,
    failures = failures + excluded.failures;

-- name: get_counts
SELECT day, processed, failures FROM counters WHERE day IN (SELECT value FROM json_each(?));
