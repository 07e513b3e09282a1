-- ARGV[OP..]: generation (0: a blind release that only frees), lease,
-- result (0 success, 1 failure, 2 cancelled).
local generation, lease, result = tonumber(ARGV[OP]), tonumber(ARGV[OP + 1]), tonumber(ARGV[OP + 2])
origin = lease
if m.st == HALF_OPEN and (generation == m.g or generation == 0) then
  local kept = {}
  for _, l in ipairs(m.leases) do
    if l.id ~= lease then table.insert(kept, l) end
  end
  m.leases = kept
  if generation == 0 then
    -- freed, nothing counted
  elseif result == 1 then
    open(m)
  elseif result == 0 then
    m.ps = m.ps + 1
    if m.ps >= P.successes then
      m.op = 0
      transition(m, CLOSED)
    end
  end
end
return finish(m, before, reset)
