-- POST a body of BENCH_BODY_SIZE bytes of "x" (default 256) with BENCH_CONTENT_TYPE.
-- Used by echo (256 B), multi_request_body (4 KiB) and large_post_streaming (1 MiB).
dofile("report.lua")
local size = tonumber(os.getenv("BENCH_BODY_SIZE") or "256")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/octet-stream"
wrk.headers["User-Agent"] = "rr-bench/1.0"
wrk.headers["Accept"] = "*/*"
