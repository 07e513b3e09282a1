-- ARGV[OP..]: generation, lease, result (0 success, 1 failure, 2 cancelled).
local generation, lease, result = tonumber(ARGV[OP]), tonumber(ARGV[OP + 1]), tonumber(ARGV[OP + 2])
if generation == m.g and m.st == HALF_OPEN then
  local kept = {}
  for _, l in ipairs(m.leases) do
    if l.id ~= lease then table.insert(kept, l) end
  end
  m.leases = kept
  if result == 1 then
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
