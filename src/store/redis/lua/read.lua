-- No arguments: applies expiries and answers the state. Writes only when it
-- must (the breaker did not exist, held garbage, or a forced state ended), so
-- the periodic reads of idle breakers cost Redis no writes.
if missing or reset or m.g ~= before then
  return finish(m, before, reset)
end
return { m.st, m.g, remaining(m), 0, 0, 0, 0, 0 }
