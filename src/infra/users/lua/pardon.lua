-- Takes one offence back (an overturned appeal); returns the user's state after it (all nil
-- for a user not held, which stays so). The stored time of heat and strikes stays as it was,
-- and so do the TTLs.
-- KEYS: 1 user hash, 2 user's recent messages, 3 user's message times.
-- ARGV: 1 the offence's time (ms), 2 its heat, 3 heat half-life (ms), 4 its strikes,
--       5 memory half-life (ms), 6 escalates ("1" or "0").
local h = redis.call('HMGET', KEYS[1], unpack(FIELDS))
if known(h) then
  local at = tonumber(ARGV[1])
  local stored_at = num(h[5], 0)
  local heat = pardoned(num(h[4], 0), stored_at, tonumber(ARGV[2]), at, tonumber(ARGV[3]))
  local strikes = pardoned(num(h[10], 0), stored_at, tonumber(ARGV[4]), at, tonumber(ARGV[5]))
  local step = num(h[8], 0)
  if ARGV[6] == '1' then
    step = math.max(step - 1, 0)
  end
  redis.call('HSET', KEYS[1],
    'heat', string.format('%.17g', heat),
    'strikes', string.format('%.17g', strikes),
    'off', math.max(num(h[7], 0) - 1, 0),
    'step', step)
end
return {
  redis.call('HMGET', KEYS[1], unpack(FIELDS)),
  redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1),
}
