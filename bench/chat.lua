-- wrk script for bench/run.sh: POST an OpenAI chat completion and print one machine-readable
-- summary line. Configured from the environment:
--   BENCH_AUTH    the Bearer token to send
--   BENCH_STREAM  "1" to ask for an SSE stream ("stream":true), else a plain JSON reply
-- wrk's latency is the time from writing the request to reading the end of the response,
-- so for streams it covers the whole stream (all chunks and data: [DONE]).

local token = os.getenv("BENCH_AUTH") or ""
local stream = os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
if stream then
  wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count to twenty."}],"stream":true}'
else
  wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d mean_us=%.1f max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_timeout=%d err_status=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.timeout, e.status))
end
