-- Records one offence; returns the user's state after it.
-- KEYS: 1 user hash, 2 user's recent messages, 3 user's message times.
-- ARGV: 1 now (ms), 2 heat added, 3 half-life (ms), 4 escalates ("1" or "0"),
--       5 cooled-down heat, 6 idle TTL (ms), 7 forgotten heat, 8 strikes added,
--       9 memory half-life (ms), 10 the offence's ladder step, 11 forgotten strikes.
local now = tonumber(ARGV[1])
local half_life = tonumber(ARGV[3])
local idle = tonumber(ARGV[6])
local forgotten = tonumber(ARGV[7])
local memory_half_life = tonumber(ARGV[9])
local forgotten_strikes = tonumber(ARGV[11])

local h = load_user(now, idle, forgotten, forgotten_strikes)
local decayed = decay(num(h[4], 0), num(h[5], 0), now, half_life)
local strikes = decay(num(h[10], 0), num(h[5], 0), now, memory_half_life) + tonumber(ARGV[8])
local step = num(h[8], 0)
-- Cooled down: this offence opens a new heat episode ...
if decayed < tonumber(ARGV[5]) then
  step = 0
end
-- ... on the rung the engine resumed the ladder at, if higher.
step = math.max(step, tonumber(ARGV[10]))
if ARGV[4] == '1' then
  step = step + 1
end
local heat = decayed + tonumber(ARGV[2])
local last_offence = math.max(num(h[9], now), now)
redis.call('HSET', KEYS[1],
  'heat', string.format('%.17g', heat),
  'heat_at', math.max(num(h[5], 0), now),
  'hl', ARGV[3],
  'strikes', string.format('%.17g', strikes),
  'mhl', ARGV[9],
  'step', step,
  'last_off', last_offence)
redis.call('HINCRBY', KEYS[1], 'off', 1)

local user_ttl = ttl(idle, heat, half_life, forgotten, strikes, memory_half_life,
  forgotten_strikes)
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], user_ttl)
end
return {
  redis.call('HMGET', KEYS[1], unpack(FIELDS)),
  redis.call('LRANGE', KEYS[2], 0, -1),
  redis.call('LRANGE', KEYS[3], 0, -1),
}
