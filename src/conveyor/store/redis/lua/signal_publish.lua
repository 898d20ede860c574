-- signal_publish: tell every server a signal (store/signals.py). A script, so that on a Cluster
-- the shard channel is declared like a key and the message goes to the namespace's node.
-- KEYS[1] {ns}:signals  channel of "<origin> <topic> <keys as a JSON array>"
-- ARGV[1] SPUBLISH or PUBLISH, ARGV[2] the message
redis.call(ARGV[1], KEYS[1], ARGV[2])
return 1
