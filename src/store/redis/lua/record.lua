-- ARGV[OP..]: generation, successes, failures, slow, trailing failures.
local generation = tonumber(ARGV[OP])
if generation == m.g or generation == 0 then
  if m.st == CLOSED then
    count(m, tonumber(ARGV[OP + 1]), tonumber(ARGV[OP + 2]), tonumber(ARGV[OP + 3]), tonumber(ARGV[OP + 4]))
    if should_trip(m) then open(m) end
  elseif m.st == FORCED_CLOSED then
    count(m, tonumber(ARGV[OP + 1]), tonumber(ARGV[OP + 2]), tonumber(ARGV[OP + 3]), tonumber(ARGV[OP + 4]))
  end
end
return finish(m, before, reset)
