-- post_4kb_form: 128 pairs kNNN=abcdefghijklmnopqrstuvwxyz0, urlencoded.
dofile("report.lua")
local pairs_ = {}
for i = 0, 127 do
  pairs_[#pairs_ + 1] = string.format("k%03d=abcdefghijklmnopqrstuvwxyz0", i)
end
wrk.method = "POST"
wrk.body = table.concat(pairs_, "&")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
