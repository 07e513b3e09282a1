-- The breaker state machine, a line-for-line port of src/machine.rs.
-- Prepended to every script. KEYS[1] is the breaker's hash; ARGV holds the
-- policy (see `Params` in src/policy.rs), the channel, the name, a random
-- number for jitter and a clock override (0: use Redis TIME), then the
-- operation's own arguments from ARGV[OP] on.
local key = KEYS[1]
-- The policy, in the order of `Params::script_args` in src/policy.rs.
local PARAMS = { 'consecutive', 'failure_num', 'failure_den', 'slow_num', 'slow_den', 'minimum_calls',
  'bucket_ms', 'buckets', 'break_ms', 'backoff_permille', 'break_max_ms', 'jitter_ppm', 'permits',
  'successes', 'lease_ms', 'ttl_ms', 'sync_ms', 'quorum', 'fingerprint' }
local P = {}
for i, field in ipairs(PARAMS) do P[field] = tonumber(ARGV[i]) end
local channel = ARGV[#PARAMS + 1]
local name = ARGV[#PARAMS + 2]
local rand16 = tonumber(ARGV[#PARAMS + 3])
local now = tonumber(ARGV[#PARAMS + 4])
local OP = #PARAMS + 5
-- The fingerprint of another policy that wrote before this call (0: none).
local other_policy = 0
-- Who made a transition, as announced: the reporting instance or the
-- probe's lease (an operation's script sets it; 0: nobody in particular).
local origin = 0
-- The state before this call (for the announcement).
local before_state = 0
local MAX_QUORUM = 16
local UNKNOWN_AGE = 1099511627776

if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local SCHEMA = 1
local CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, FORCED_CLOSED, DISABLED = 0, 1, 2, 3, 4, 5
-- The generation of a breaker Redis does not hold (machine.rs: IMPLICIT_GENERATION).
local IMPLICIT = 1

-- Numbers go to Redis through string.format: tostring would write 1.7e+12.
local function int(n)
  return string.format('%d', n)
end

local function fresh(generation)
  return { st = CLOSED, g = generation, ou = 0, fu = 0, op = 0, cf = 0, rs = 0, sa = 0, ps = 0, bm = 0, pf = 0,
    fr = '', fa = '', ft = 0, leases = {}, w = {}, fi = {}, tr = {} }
end

local function valid_int(n, min, max)
  return n ~= nil and n == n and n >= min and n <= max and n == math.floor(n)
end

-- Loads the breaker; a missing one is the implicit closed breaker, saved only
-- once something worth keeping happens to it (see worth_keeping). Unreadable data is
-- replaced by a fresh closed breaker (second result true) whose generation is
-- still newer than the old one where that could be read.
local missing = false
-- The hash holds an operator's note (fr, fa, ft) to delete when it goes.
local had_note = false
local function load()
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    missing = true
    return fresh(IMPLICIT), false
  end
  if kind ~= 'hash' then
    error({ err = 'DCB_CORRUPT key ' .. key .. ' holds a ' .. kind .. ', not a breaker hash' })
  end
  local h = redis.call('HGETALL', key)
  local f = {}
  for i = 1, #h, 2 do
    f[h[i]] = h[i + 1]
  end
  local v = tonumber(f.v)
  if v ~= nil and v > SCHEMA then
    error({ err = 'DCB_SCHEMA key ' .. key .. ' has schema version ' .. tostring(f.v) .. '; this client knows ' .. SCHEMA })
  end
  local big = 9007199254740991
  local m = {
    st = tonumber(f.st), g = tonumber(f.g), ou = tonumber(f.ou), fu = tonumber(f.fu), op = tonumber(f.op),
    cf = tonumber(f.cf), rs = tonumber(f.rs or '0'), sa = tonumber(f.sa or '0'), ps = tonumber(f.ps),
    bm = tonumber(f.bm or '0'), pf = tonumber(f.pf or '0'),
    fr = f.fr or '', fa = f.fa or '', ft = tonumber(f.ft or '0'),
    leases = {}, w = {}, fi = {}, tr = {},
  }
  had_note = f.ft ~= nil
  -- A note belongs to the generation it was written under (fg): one left
  -- behind by a client that does not know notes is dropped.
  if not valid_int(m.ft, 0, big) or f.fg ~= f.g then m.fr, m.fa, m.ft = '', '', 0 end
  local ok = v == SCHEMA and valid_int(m.st, 0, 5) and valid_int(m.g, 1, big) and valid_int(m.ou, 0, big)
    and valid_int(m.fu, 0, big) and valid_int(m.op, 0, 4294967295) and valid_int(m.cf, 0, big)
    and valid_int(m.rs, 0, big) and valid_int(m.sa, 0, big) and valid_int(m.bm, 0, big)
    and valid_int(m.pf, 0, big)
    and valid_int(m.ps, 0, 4294967295)
  if ok then
    for item in string.gmatch(f.ls or '', '[^,]+') do
      local id, dl = string.match(item, '^(%d+):(%d+)$')
      if id == nil then ok = false break end
      table.insert(m.leases, { id = tonumber(id), dl = tonumber(dl) })
    end
  end
  if ok then
    for item in string.gmatch(f.w or '', '[^,]+') do
      local idx, calls, fails, slow = string.match(item, '^(%d+):(%d+):(%d+):(%d+)$')
      if idx == nil then ok = false break end
      table.insert(m.w, { tonumber(idx), tonumber(calls), tonumber(fails), tonumber(slow) })
    end
  end
  for _, field in ipairs({ 'fi', 'tr' }) do
    if ok then
      for item in string.gmatch(f[field] or '', '[^,]+') do
        local id, at = string.match(item, '^(%d+):(%d+)$')
        if id == nil then ok = false break end
        table.insert(m[field], { id = tonumber(id), at = tonumber(at) })
      end
    end
  end
  if not ok then
    local g = tonumber(f.g)
    local generation = now + 1
    if valid_int(g, 1, big - 1) and g >= generation then
      generation = g + 1
    end
    return fresh(generation), true
  end
  return m, false
end

local function save(m)
  local leases = {}
  for _, l in ipairs(m.leases) do
    table.insert(leases, int(l.id) .. ':' .. int(l.dl))
  end
  local window = {}
  for _, b in ipairs(m.w) do
    table.insert(window, int(b[1]) .. ':' .. int(b[2]) .. ':' .. int(b[3]) .. ':' .. int(b[4]))
  end
  local seen = {}
  for _, field in ipairs({ 'fi', 'tr' }) do
    local items = {}
    for _, s in ipairs(m[field]) do
      table.insert(items, int(s.id) .. ':' .. int(s.at))
    end
    seen[field] = table.concat(items, ',')
  end
  redis.call('HSET', key, 'v', int(SCHEMA), 'st', int(m.st), 'g', int(m.g), 'ou', int(m.ou), 'fu', int(m.fu),
    'op', int(m.op), 'cf', int(m.cf), 'rs', int(m.rs), 'sa', int(m.sa), 'bm', int(m.bm), 'pf', int(m.pf), 'ps', int(m.ps),
    'ls', table.concat(leases, ','), 'w', table.concat(window, ','), 'fi', seen.fi, 'tr', seen.tr)
  -- The operator's note (machine.rs: Note): only while there is one.
  if m.ft ~= 0 then
    redis.call('HSET', key, 'fr', m.fr, 'fa', m.fa, 'ft', int(m.ft), 'fg', int(m.g))
  elseif had_note then
    redis.call('HDEL', key, 'fr', 'fa', 'ft', 'fg')
  end
  local forced = m.st == FORCED_OPEN or m.st == FORCED_CLOSED or m.st == DISABLED
  if forced and m.fu == 0 then
    -- An operator's state without an expiry stays until reset.
    redis.call('PERSIST', key)
  elseif forced then
    redis.call('PEXPIRE', key, int(math.max(P.ttl_ms, m.fu - now + P.ttl_ms)))
  elseif m.st == OPEN then
    -- An operator's break may outlast the TTL.
    redis.call('PEXPIRE', key, int(math.max(P.ttl_ms, m.ou - now + P.ttl_ms)))
  elseif m.st == CLOSED then
    -- A closed breaker's counts mean nothing after its window.
    redis.call('PEXPIRE', key, int(math.min(P.ttl_ms, P.bucket_ms * P.buckets)))
  else
    redis.call('PEXPIRE', key, int(P.ttl_ms))
  end
end

local function live_leases(m)
  local n = 0
  for _, l in ipairs(m.leases) do
    if l.dl > now then n = n + 1 end
  end
  return n
end

local function remaining(m)
  if m.st == OPEN then
    return math.max(m.ou - now, 0)
  elseif m.st == HALF_OPEN and live_leases(m) >= P.permits then
    local first = nil
    for _, l in ipairs(m.leases) do
      if first == nil or l.dl < first then first = l.dl end
    end
    if first == nil then first = now end
    return math.min(math.max(first - now, 0), P.sync_ms)
  elseif m.st == FORCED_OPEN and m.fu == 0 then
    -- Until an operator acts: a minute, or the longest break if longer
    -- (machine.rs: UNTIL_RESET_RETRY_MS).
    return math.max(P.break_max_ms, 60000)
  elseif m.st == FORCED_OPEN or m.st == FORCED_CLOSED or m.st == DISABLED then
    return math.max(m.fu - now, 0)
  end
  return 0
end

local function transition(m, state)
  m.st = state
  -- The first transition of a breaker Redis did not hold jumps to now: newer
  -- than anything a process remembers of an earlier life of the key.
  if m.g == IMPLICIT then m.g = math.max(m.g, now) + 1 else m.g = m.g + 1 end
  m.cf = 0
  m.rs = 0
  m.sa = 0
  m.fi = {}
  m.tr = {}
  m.ps = 0
  m.fu = 0
  m.leases = {}
  m.w = {}
  m.fr, m.fa, m.ft = '', '', 0
end

local function break_ms(opens)
  local d = P.break_ms
  for _ = 2, math.min(opens, 64) do
    if d >= P.break_max_ms then break end
    d = math.floor(d * P.backoff_permille / 1000)
  end
  d = math.min(d, P.break_max_ms)
  local span = math.floor(d * P.jitter_ppm / 1000000)
  return math.max(d - math.floor(span * (rand16 % 65536) / 65536), 1)
end

local function open(m)
  transition(m, OPEN)
  m.op = math.min(m.op + 1, 4294967295)
  m.ou = now + break_ms(m.op)
end

local function expire(m)
  local forced = m.st == FORCED_OPEN or m.st == FORCED_CLOSED or m.st == DISABLED
  if forced and m.fu ~= 0 and now >= m.fu then
    transition(m, CLOSED)
  end
end

-- Notes that instance `id` was seen now, forgetting what left the window; at
-- most MAX_QUORUM entries (the oldest go).
local function note(seen, id, window)
  local kept = {}
  for _, s in ipairs(seen) do
    if s.id ~= id and s.at + window > now then table.insert(kept, s) end
  end
  if #kept >= MAX_QUORUM then table.remove(kept, 1) end
  table.insert(kept, { id = id, at = now })
  return kept
end

-- Lays the window out as this caller's policy says, keeping what it counted
-- (two policies share a breaker during a rolling deploy).
local function rebucket(m)
  local from_ms = m.bm
  if from_ms == 0 then from_ms = P.bucket_ms end
  if #m.w == P.buckets and from_ms == P.bucket_ms then
    m.bm = P.bucket_ms
    return
  end
  local old = m.w
  m.w = {}
  for i = 1, P.buckets do m.w[i] = { 0, 0, 0, 0 } end
  m.bm = P.bucket_ms
  local current = math.floor(now / P.bucket_ms)
  for _, b in ipairs(old) do
    if b[2] > 0 then
      local index = math.floor(b[1] * from_ms / P.bucket_ms)
      if index <= current and index + P.buckets > current then
        local slot = (index % P.buckets) + 1
        local w = m.w[slot]
        local skip = false
        if w[1] ~= index then
          if w[2] > 0 and w[1] > index then
            skip = true
          else
            w = { index, 0, 0, 0 }
            m.w[slot] = w
          end
        end
        if not skip then
          w[2] = w[2] + b[2]
          w[3] = w[3] + b[3]
          w[4] = w[4] + b[4]
        end
      end
    end
  end
end

-- b: successes, failures, slow, trailing, success_age, run_age, instance, tripped, counted_age.
local function count(m, b)
  if b.successes > 0 then
    m.sa = math.max(m.sa, math.max(now - b.success_age, 0))
    if m.cf > 0 and m.rs <= m.sa then
      m.cf = 0
    end
  end
  if b.trailing > 0 and b.run_age < UNKNOWN_AGE then
    local start = math.max(now - b.run_age, 0)
    if start >= m.sa then
      if m.cf == 0 then m.rs = start else m.rs = math.min(m.rs, start) end
      m.cf = m.cf + b.trailing
    end
  end
  if P.quorum > 1 then
    local window = P.bucket_ms * P.buckets
    if b.failures > 0 then m.fi = note(m.fi, b.instance, window) end
    if b.tripped then m.tr = note(m.tr, b.instance, window) end
  end
  rebucket(m)
  -- The bucket of when the calls happened, not of when they arrived.
  local index = math.floor(math.max(now - b.counted_age, 0) / P.bucket_ms)
  if index + P.buckets <= math.floor(now / P.bucket_ms) then return end
  local slot = (index % P.buckets) + 1
  local w = m.w[slot]
  if w[1] < index or w[2] == 0 then
    w = { index, 0, 0, 0 }
    m.w[slot] = w
  elseif w[1] > index then
    return
  end
  w[2] = w[2] + b.successes + b.failures
  w[3] = w[3] + b.failures
  w[4] = w[4] + b.slow
end

local function should_trip(m, tripped)
  local window = P.bucket_ms * P.buckets
  local function distinct(seen)
    local n = 0
    for _, s in ipairs(seen) do
      if s.at + window > now then n = n + 1 end
    end
    return n
  end
  if P.quorum <= 1 then
    if tripped then return true end
  else
    if distinct(m.tr) >= P.quorum then return true end
    if distinct(m.fi) < P.quorum then return false end
  end
  if P.consecutive > 0 and m.cf >= P.consecutive then return true end
  if P.failure_num == 0 and P.slow_num == 0 then return false end
  local current = math.floor(now / P.bucket_ms)
  local oldest = math.max(current + 1 - P.buckets, 0)
  local calls, fails, slow = 0, 0, 0
  for _, w in ipairs(m.w) do
    if w[2] > 0 and w[1] >= oldest and w[1] <= current then
      calls = calls + w[2]
      fails = fails + w[3]
      slow = slow + w[4]
    end
  end
  if calls < P.minimum_calls then return false end
  -- Exact: count / calls >= num / den, cross-multiplied.
  local function reached(n, num, den)
    return num > 0 and n * den >= num * calls
  end
  return reached(fails, P.failure_num, P.failure_den) or reached(slow, P.slow_num, P.slow_den)
end

-- Saves, announces a transition, and answers
-- {state, generation, remaining, lease, reset, other policy}.
-- Mirrors Machine::worth_keeping.
local function worth_keeping(m)
  if m.st ~= CLOSED or m.g ~= IMPLICIT or m.cf ~= 0 or (P.quorum > 1 and #m.fi > 0) or #m.tr > 0
    or #m.leases > 0 then
    return true
  end
  if P.failure_num > 0 or P.slow_num > 0 then
    for _, b in ipairs(m.w) do
      if b[2] ~= 0 then return true end
    end
  end
  return false
end

local function finish(m, before, reset, lease)
  if not missing or worth_keeping(m) then
    save(m)
  end
  local rem = remaining(m)
  local unannounced = 0
  if m.g ~= before then
    -- pcall: the state is saved already; a refused PUBLISH (ACL channel
    -- rights) must not turn the call into an error the client would retry.
    -- v2: state, generation, remaining, origin, state before, name.
    local sent = redis.pcall('PUBLISH', channel, 'v2 ' .. int(m.st) .. ' ' .. int(m.g) .. ' ' .. int(rem) .. ' '
      .. int(origin) .. ' ' .. int(before_state) .. ' ' .. name)
    if type(sent) == 'table' and sent.err then unannounced = 1 end
  end
  local flag = 0
  if reset then flag = 1 end
  local changed = 0
  if m.g ~= before then changed = 1 end
  return { m.st, m.g, rem, lease or 0, flag, other_policy, unannounced, changed }
end

local m, reset = load()
local before = m.g
before_state = m.st
if reset then before = -1 end
expire(m)
