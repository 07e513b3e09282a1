-- ARGV[OP..]: generation, successes, failures, slow, trailing failures,
-- success age, run age, instance, tripped (0 or 1), counted age.
local generation = tonumber(ARGV[OP])
local b = {
  successes = tonumber(ARGV[OP + 1]), failures = tonumber(ARGV[OP + 2]), slow = tonumber(ARGV[OP + 3]),
  trailing = tonumber(ARGV[OP + 4]), success_age = tonumber(ARGV[OP + 5]), run_age = tonumber(ARGV[OP + 6]),
  instance = tonumber(ARGV[OP + 7]), tripped = tonumber(ARGV[OP + 8]) == 1,
  counted_age = tonumber(ARGV[OP + 9]),
}
origin = b.instance
if m.pf ~= 0 and m.pf ~= P.fingerprint then other_policy = m.pf end
m.pf = P.fingerprint
if generation == m.g or generation == 0 or m.g == IMPLICIT then
  if m.st == CLOSED then
    count(m, b)
    if should_trip(m, b.tripped) then open(m) end
  elseif m.st == FORCED_CLOSED then
    count(m, b)
  end
end
return finish(m, before, reset)
