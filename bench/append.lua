-- wrk script: POST 100 bytes to a random one of N pre-created streams.
--
--   BENCH_STREAMS=1000 BENCH_PREFIX=/v1/stream/bench- \
--     wrk -t1 -c64 -d10s --latency -s bench/append.lua http://127.0.0.1:PORT
--
-- Requests are formatted once at start-up, so each request costs wrk one random number.
-- Every response status outside 200-299 is counted; done() prints one line
-- `BENCH_JSON {...}` with totals and latency percentiles (microseconds).

local streams = tonumber(os.getenv("BENCH_STREAMS") or "1000")
local prefix = os.getenv("BENCH_PREFIX") or "/v1/stream/bench-"
local body_size = tonumber(os.getenv("BENCH_BODY_BYTES") or "100")
local count_statuses = (os.getenv("BENCH_COUNT_STATUSES") or "1") == "1"

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
   local body = string.rep("x", body_size)
   local headers = { ["Content-Type"] = "application/octet-stream" }
   requests = {}
   for i = 1, streams do
      requests[i] = wrk.format("POST", prefix .. (i - 1), headers, body)
   end
   non2xx = 0
   statuses = {}
   if count_statuses then
      response = function(status, headers, body)
         if status < 200 or status > 299 then
            non2xx = non2xx + 1
            statuses[status] = (statuses[status] or 0) + 1
         end
      end
   end
end

function request()
   return requests[math.random(1, streams)]
end

function done(summary, latency, requests)
   local non2xx_total = 0
   local by_status = {}
   for _, thread in ipairs(threads) do
      non2xx_total = non2xx_total + (thread:get("non2xx") or 0)
      local s = thread:get("statuses") or {}
      for status, n in pairs(s) do
         by_status[#by_status + 1] = string.format('"%d":%d', status, n)
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"non2xx":%d,"non2xx_by_status":{%s},"counted_statuses":%s,' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      non2xx_total, table.concat(by_status, ","), tostring(count_statuses),
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
