-- pipelined_h1: BENCH_PIPELINE (default 4) GETs of wrk's path in one write.
-- wrk counts every response but records one latency per batch.
dofile("report.lua")
local depth = tonumber(os.getenv("BENCH_PIPELINE") or "4")
local batch
function init(args)
  local one = wrk.format("GET", wrk.path)
  batch = string.rep(one, depth)
end
function request()
  return batch
end
