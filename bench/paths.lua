-- wrk: request the paths listed in $PATHS in turn (each thread starts at its own place in the list).
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local i = 0
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("start", counter * 7919)
end
init = function(args)
  i = (start or 0) % #paths
end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
