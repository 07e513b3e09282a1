-- ARGV[OP]: the lease id the client chose.
local id = tonumber(ARGV[OP])
origin = id
if m.st == OPEN and now >= m.ou then
  transition(m, HALF_OPEN)
end
local lease = 0
if m.st == HALF_OPEN then
  local kept = {}
  local held = false
  for _, l in ipairs(m.leases) do
    if l.dl > now then
      table.insert(kept, l)
      if l.id == id then held = true end
    end
  end
  m.leases = kept
  if held then
    lease = id
  elseif id ~= 0 and #m.leases < P.permits then
    lease = id
    table.insert(m.leases, { id = id, dl = now + P.lease_ms })
  end
end
return finish(m, before, reset, lease)
