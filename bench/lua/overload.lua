-- wrk script of the overload bench (bench/overload.py fills the @NAME@ parameters). One fixed body,
-- paced at RATE requests/s in total (delay(): each connection keeps a fixed schedule; a slot missed is
-- not made up, so the achieved rate is reported). wrk's own latency mixes every status; here each
-- request carries its send time in X-Request-Id, which the receiver echoes, so response() can tell the
-- latency of the accepted (2xx) requests apart. done() writes the counts by status and a histogram of
-- the 2xx latencies (1 ms buckets) as JSON for the harness.
local body_file = "@BODY_FILE@"
local out_file = "@OUT_FILE@"
local path = "@PATH@"
local rate = @RATE@
local threads = @THREADS@

local f = assert(io.open(body_file, "rb"))
local template = f:read("*a")
f:close()

wrk.method = "POST"
wrk.path = path
wrk.body = template
wrk.headers = {}
@HEADERS@

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } ov_timespec;
  int clock_gettime(int clk_id, ov_timespec *tp);
]]
local ts = ffi.new("ov_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local all_threads = {}
function setup(thread)
  table.insert(all_threads, thread)
end

-- per thread
statuses = {}
ok_hist = {}
unmatched = 0

local interval = threads * 1000.0 / rate
local slot = nil
function delay()
  local t = now_us() / 1000
  if slot == nil or slot < t then
    slot = t
  end
  slot = slot + interval
  return math.floor(slot - t)
end

function request()
  wrk.headers["X-Request-Id"] = "ov" .. string.format("%d", now_us())
  return wrk.format(nil, nil, nil, nil)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status >= 200 and status < 300 then
    local id = headers["X-Request-Id"] or headers["x-request-id"]
    if id == nil or string.sub(id, 1, 2) ~= "ov" then
      unmatched = unmatched + 1
      return
    end
    local ms = math.floor((now_us() - tonumber(string.sub(id, 3))) / 1000)
    local k = tostring(ms)
    ok_hist[k] = (ok_hist[k] or 0) + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local merged_status = {}
  local merged_hist = {}
  local unmatched_total = 0
  for _, thread in ipairs(all_threads) do
    for k, v in pairs(thread:get("statuses")) do
      merged_status[k] = (merged_status[k] or 0) + v
    end
    for k, v in pairs(thread:get("ok_hist")) do
      merged_hist[k] = (merged_hist[k] or 0) + v
    end
    unmatched_total = unmatched_total + thread:get("unmatched")
  end
  local function encode(t)
    local parts = {}
    for k, v in pairs(t) do
      table.insert(parts, string.format('"%s": %d', k, v))
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  local out = assert(io.open(out_file, "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"timeouts": %d, "unmatched": %d, "statuses": %s, "ok_latency_ms": %s, "all_p99_us": %d}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, unmatched_total,
    encode(merged_status), encode(merged_hist), latency:percentile(99)))
  out:close()
end
