-- Reads one user's state and the channel's messages, atomically.
-- KEYS: 1 user hash, 2 recent messages, 3 message times, 4 channel's messages.
return {
  redis.call('HMGET', KEYS[1], unpack(FIELDS)),
  redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1),
  redis.call('LRANGE', KEYS[4], 0, -1),
}
