-- wrk script of the bench (bench/wrk.py fills the @NAME@ parameters). One fixed request (METHOD: POST,
-- or OPTIONS for a CORS preflight, which has no body), or with
-- UNIQUE its ids tagged per request; with RATE > 0 each thread paces its requests on a fixed schedule
-- (delay()), else closed loop. done() writes the summary as JSON for the harness.
local body_file = "@BODY_FILE@"
local out_file = "@OUT_FILE@"
local path = "@PATH@"
local rate = @RATE@
local threads = @THREADS@
local unique = @UNIQUE@
local placeholder = "@R@"
local run_id = @RUN_ID@
local method = "@METHOD@"

local f = assert(io.open(body_file, "rb"))
local template = f:read("*a")
f:close()

wrk.method = method
wrk.path = path
-- An empty template sends no body (and no Content-Length), as a preflight has none.
if template == "" then
  template = nil
end
wrk.body = template
wrk.headers = {}
@HEADERS@

local counter = 0
local fixed_request = nil

local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("thread_no", next_id)
end

function init(args)
  fixed_request = wrk.format(method, path, wrk.headers, template)
end

function request()
  if not unique then
    return fixed_request
  end
  counter = counter + 1
  -- 12 hex digits: this wrk run, its thread, the request (DFINERY ids are UUIDs)
  local tag = string.format("%03x%x%08x", run_id, thread_no or 0, counter)
  local body = string.gsub(template, placeholder, tag)
  return wrk.format(method, path, wrk.headers, body)
end

if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = threads * 1000.0 / rate
  local slot = nil
  function delay()
    local t = now_ms()
    -- A slot missed (server or client behind) is not made up later: the achieved rate says so.
    if slot == nil or slot < t then
      slot = t
    end
    slot = slot + interval
    return math.floor(slot - t)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(out_file, "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "lat_mean_us": %f, "lat_max_us": %d, ' ..
    '"lat_p50_us": %d, "lat_p90_us": %d, "lat_p99_us": %d, "lat_p999_us": %d}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
  out:close()
end
