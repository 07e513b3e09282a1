-- A read that writes nothing (run with EVALSHA_RO, so it could run on a
-- replica): the state as it is, or {-1} when reading must write (the data
-- is unreadable and must be reset, or a forced state just ended), for the
-- client to run `read` instead.
if missing then
  return { m.st, m.g, remaining(m), 0, 0, 0, 0, 0 }
end
if reset or m.g ~= before then
  return { -1 }
end
return { m.st, m.g, remaining(m), 0, 0, 0, 0, 0 }
