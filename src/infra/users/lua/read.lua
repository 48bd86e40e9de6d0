-- Reads one user's state, atomically. KEYS: 1 user hash, 2 recent messages, 3 message times.
return {
  redis.call('HMGET', KEYS[1], unpack(FIELDS)),
  redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1),
}
