-- No arguments of its own.
if m.st == OPEN and now >= m.ou then
  transition(m, HALF_OPEN)
end
local lease = 0
if m.st == HALF_OPEN then
  local kept = {}
  for _, l in ipairs(m.leases) do
    if l.dl > now then table.insert(kept, l) end
  end
  m.leases = kept
  if #m.leases < P.permits then
    lease = m.nl
    m.nl = m.nl + 1
    table.insert(m.leases, { id = lease, dl = now + P.lease_ms })
  end
end
return finish(m, before, reset, lease)
