-- varied_paths_router: GET /api/v1/items/0001 .. /api/v1/items/<BENCH_ROUTES>, round-robin.
dofile("report.lua")
local count = tonumber(os.getenv("BENCH_ROUTES") or "100")
local reqs = {}
local i = 0
function init(args)
  for n = 1, count do
    reqs[n] = wrk.format("GET", string.format("/api/v1/items/%04d", n))
  end
end
function request()
  i = i % count + 1
  return reqs[i]
end
