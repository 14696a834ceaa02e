-- wrk script for bench/compare.sh: POSTs one fixed OpenAI Chat Completions request (non-streamed)
-- on every connection, and at the end prints one machine-readable line for the script:
--   WRK requests=N duration_us=N p50_us=N p90_us=N p99_us=N max_us=N err_connect=N err_read=N
--       err_write=N err_status=N err_timeout=N
-- err_status counts answers that were not 2xx/3xx. Extra headers (Portkey's) come from wrk -H.
--   wrk -t1 -c64 -d10s --latency -s bench/wrk/chat.lua http://127.0.0.1:8787/v1/chat/completions
-- With WRK_RATE=R in the environment (use -t1), requests are paced to R per second instead of
-- each connection sending its next request as soon as the answer arrives: wrk's delay() hook
-- hands out send slots 1/R apart (wrk's timers have 1 ms resolution, so slots due in the same
-- millisecond leave together). Latency is still measured from the send, not from the slot.
-- Enough connections must be open for R x latency requests in flight; compare.sh uses 16.
-- The body is 655 bytes: a system prompt, a short exchange and a question, the shape of a small
-- agent turn; "model": "default" (moongate resolves it; the mock, nginx and Portkey pass it on).

-- The body is read from chat.json next to this script (bench/paced_load sends the same file).
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local f = assert(io.open(here .. "chat.json", "rb"))
local body = f:read("*a"):gsub("%s+$", "")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"

local rate = tonumber(os.getenv("WRK_RATE") or "")
if rate and rate > 0 then
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } wrk_timespec_t;
    int clock_gettime(int clk, wrk_timespec_t *ts);
  ]])
  local ts = ffi.new("wrk_timespec_t")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate
  local slot = nil
  function delay()
    local now = now_ms()
    -- A peer that falls more than 100 ms behind does not get the backlog in one burst: the
    -- measured rate then shows the shortfall.
    if not slot or slot < now - 100 then slot = now end
    local d = slot - now
    slot = slot + interval
    return math.floor(d + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d err_connect=%d err_read=%d "
      .. "err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
