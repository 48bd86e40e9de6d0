-- Prepended to every modbot user-state script. The rules here are the in-process backend's
-- too: `decay` and `pardoned` in src/domain/history.rs, `is_expired` in
-- src/infra/users/memory.rs.

-- The user hash's fields, in the order the Rust side reads them. `strikes` and `mhl` came
-- later: a hash written before them lacks both and reads as no strikes.
local FIELDS = {'first', 'last', 'n', 'heat', 'heat_at', 'hl', 'off', 'step', 'last_off',
  'strikes', 'mhl'}
-- Longest TTL set (ten years), so that PEXPIRE always gets a plain integer.
local MAX_TTL_MS = 315360000000

local function num(value, default)
  if value then
    return tonumber(value)
  end
  return default
end

local function decay(heat, at, now, half_life)
  if heat == 0 or now <= at then
    return heat
  end
  if half_life <= 0 then
    return 0
  end
  return heat * 0.5 ^ ((now - at) / half_life)
end

-- `stored` at `stored_at` less `added` at `offence_at` decayed to `stored_at`, never below 0.
local function pardoned(stored, stored_at, added, offence_at, half_life)
  local left = stored - decay(added, offence_at, stored_at, half_life)
  if left > 1e-12 then
    return left
  end
  return 0
end

-- `h` is HMGET of FIELDS.
local function heat_now(h, now)
  return decay(num(h[4], 0), num(h[5], 0), now, num(h[6], 0))
end

local function strikes_now(h, now)
  return decay(num(h[10], 0), num(h[5], 0), now, num(h[11], 0))
end

local function last_active(h)
  return math.max(num(h[2], -math.huge), num(h[5], 0))
end

local function known(h)
  for i = 1, #FIELDS do
    if h[i] then
      return true
    end
  end
  return false
end

-- Idle for the TTL by the caller's clock, cooled below the forgotten heat and with strikes
-- below the forgotten strikes.
local function expired(h, now, idle, forgotten, forgotten_strikes)
  return known(h) and now - last_active(h) >= idle and heat_now(h, now) < forgotten
    and strikes_now(h, now) < forgotten_strikes
end

-- Milliseconds until `amount` (heat or strikes) decays below `forgotten`.
local function forget_after(amount, half_life, forgotten)
  if amount <= forgotten or half_life <= 0 then
    return 0
  end
  return math.ceil(math.log(amount / forgotten) / math.log(2) * half_life)
end

-- A user's keys live for the idle TTL, or until both heat and strikes are forgotten.
local function ttl(idle, heat, half_life, forgotten, strikes, memory_half_life, forgotten_strikes)
  return math.min(MAX_TTL_MS, math.max(idle, forget_after(heat, half_life, forgotten),
    forget_after(strikes, memory_half_life, forgotten_strikes)))
end

local function push(key, value, capacity)
  if capacity > 0 then
    redis.call('RPUSH', key, value)
    redis.call('LTRIM', key, -capacity, -1)
  end
end

-- The user's hash, after forgetting the user if expired by `now` (KEYS[1..3] are the user's).
local function load_user(now, idle, forgotten, forgotten_strikes)
  local h = redis.call('HMGET', KEYS[1], unpack(FIELDS))
  if expired(h, now, idle, forgotten, forgotten_strikes) then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    h = redis.call('HMGET', KEYS[1], unpack(FIELDS))
  end
  return h
end

