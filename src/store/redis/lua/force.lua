-- ARGV[OP..]: command (0 open, 1 closed, 2 disabled, 3 reset, 4 open then probe),
-- duration in ms (0: until reset), then the operator's reason and actor
-- (optional; machine.rs: Machine::force_noted).
local command, duration = tonumber(ARGV[OP]), tonumber(ARGV[OP + 1])
local reason, actor = ARGV[OP + 2] or '', ARGV[OP + 3] or ''
if command == 3 then
  m.op = 0
  transition(m, CLOSED)
elseif command == 4 then
  -- An ordinary break of the operator's length: half-open after.
  transition(m, OPEN)
  m.ou = now + duration
else
  local state = ({ FORCED_OPEN, FORCED_CLOSED, DISABLED })[command + 1]
  -- Forcing the state it is in changes only the expiry: nothing announced.
  if m.st ~= state then transition(m, state) end
  m.fu = 0
  if duration > 0 then m.fu = now + duration end
end
if command == 3 or (reason == '' and actor == '') then
  m.fr, m.fa, m.ft = '', '', 0
else
  m.fr, m.fa, m.ft = reason, actor, math.max(now, 1)
end
return finish(m, before, reset)
