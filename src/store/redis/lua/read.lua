-- No arguments: applies expiries and answers the state.
return finish(m, before, reset)
