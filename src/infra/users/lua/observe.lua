-- Records one chat message; returns the user's state before it and the channel's window (not
-- its history, which only grows the reply if returned).
-- KEYS: 1 user hash, 2 user's recent messages, 3 user's message times, 4 channel's messages,
--       5 channel's history.
-- ARGV: 1 now (ms), 2 user's entry, 3 channel's entry, 4 recent per user, 5 times per user,
--       6 recent per channel, 7 idle TTL (ms), 8 forgotten heat, 9 history per channel,
--       10 forgotten strikes.
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[7])
local forgotten = tonumber(ARGV[8])
local forgotten_strikes = tonumber(ARGV[10])

local h = load_user(now, idle, forgotten, forgotten_strikes)
local recent = redis.call('LRANGE', KEYS[2], 0, -1)
local times = redis.call('LRANGE', KEYS[3], 0, -1)
local channel = redis.call('LRANGE', KEYS[4], 0, -1)

local first = num(h[1], nil)
if first == nil or now < first then
  redis.call('HSET', KEYS[1], 'first', ARGV[1])
end
local last = num(h[2], nil)
if last == nil or now > last then
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
end
redis.call('HINCRBY', KEYS[1], 'n', 1)
push(KEYS[2], ARGV[2], tonumber(ARGV[4]))
push(KEYS[3], ARGV[1], tonumber(ARGV[5]))
push(KEYS[4], ARGV[3], tonumber(ARGV[6]))
push(KEYS[5], ARGV[3], tonumber(ARGV[9]))

local user_ttl = ttl(idle, heat_now(h, now), num(h[6], 0), forgotten, strikes_now(h, now),
  num(h[11], 0), forgotten_strikes)
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], user_ttl)
end
for i = 4, 5 do
  redis.call('PEXPIRE', KEYS[i], math.min(MAX_TTL_MS, idle))
end
return {h, recent, times, channel}
