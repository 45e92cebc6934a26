-- A body-less request with the method BENCH_METHOD (default GET); cors_preflight sends OPTIONS.
dofile("report.lua")
wrk.method = os.getenv("BENCH_METHOD") or "GET"
