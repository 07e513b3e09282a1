-- KEYS[2]: the breaker's health-check turn (same hash slot as KEYS[1]).
-- ARGV[OP..]: holder, lease ms, report (0 none, 1 healthy, 2 unhealthy),
-- generation checked, extend ms.
-- Answers like every script, with the lease slot saying whether the asker
-- holds the turn (1) or not (0). Mirrors MemoryStore::health.
local turn_key = KEYS[2]
local holder, lease_ms, report = tonumber(ARGV[OP]), tonumber(ARGV[OP + 1]), tonumber(ARGV[OP + 2])
local checked, extend = tonumber(ARGV[OP + 3]), tonumber(ARGV[OP + 4])
origin = holder
-- Anything unreadable in the turn's key counts as nobody's turn, and so
-- does a turn without an expiry or longer than a lease (no script writes
-- one: it would never hand the checking on).
local held = redis.pcall('GET', turn_key)
held = tonumber(type(held) == 'string' and held or '0') or 0
if held ~= 0 then
  local ttl = redis.call('PTTL', turn_key)
  if ttl < 0 or ttl > math.max(lease_ms, 1) then held = 0 end
end
local turn = 0
if m.st == OPEN then
  if held == 0 or held == holder then
    turn = 1
    redis.call('SET', turn_key, int(holder), 'PX', int(math.max(lease_ms, 1)))
    if checked == m.g and report == 1 then
      transition(m, HALF_OPEN)
      redis.call('DEL', turn_key)
    elseif checked == m.g and report == 2 and m.ou < now + extend then
      m.ou = now + extend
    end
  end
elseif held == holder then
  redis.call('DEL', turn_key)
end
local reply = finish(m, before, reset)
reply[4] = turn
return reply
