#!/usr/bin/env bash
# auxot beside nginx, in one run, on this machine: what does each add in front of the same
# upstream, and what does it cost?
#
#   bash bench/compare.sh
#
# The proxy under test (nginx, the hyper floor or auxot) is pinned to CPU 0; the load
# generator (wrk), the probes and the mock upstream (bench/tools.rs, `bench_tools mock`)
# share CPU 1. nginx is a plain keep-alive reverse proxy (1 worker, upstream keepalive,
# proxy_buffering off, access log on, buffered); auxot runs with its defaults (request log
# line at info, usage rows written durably, API-key auth, routing) with a client key and the
# mock as an `openai` provider. The hyper floor (`bench_tools floor`) is a bare reverse proxy
# on auxot's HTTP stack (hyper 1 server and pooled client, one thread, mimalloc; no auth,
# routing, accounting or log): what any router built on that stack pays before it does any
# work of its own.
# Measured, each in BENCH_ROUNDS rounds (medians reported):
#   - added p50/p99 at c=1 (wrk, closed loop) over calling the mock directly;
#   - max req/s at c=64 and the proxy's CPU time per request (/proc utime+stime);
#   - stream time to first chunk (bench_tools ttfc), added over direct;
# then once: RSS idle, after the load, and with 1,000 streams held open (bench_tools hold).
# BENCH_PERF=1 also records a CPU profile of auxot at c=64 (perf, frame pointers) and
# writes the top symbols to bench/results/perf-auxot.txt.
#
# Needs: cargo, curl, python3, wrk, nginx, taskset (apt-get install -y wrk nginx-light).
# Knobs: BENCH_ROUNDS (3), BENCH_DURATION seconds per wrk case (8), BENCH_WARMUP (2),
# BENCH_SKIP_BUILD=1 (use target/release/{auxot,examples/bench_tools} as they are),
# AUXOT_BIN (another auxot binary, e.g. a copy of an earlier build), BENCH_LABEL (names the
# run in the report), BENCH_PERF=1, BENCH_PERF_DATA (keep perf.data at this path).
# The release build keeps symbols and frame pointers so perf can name functions:
#   CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
#   RUSTFLAGS="-C force-frame-pointers=yes"
# This is a report, not a test: nothing asserts on timings, and it is not part of CI.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-2}
UPSTREAM_KEY="sk-bench-key-000000000000"
BIN=${AUXOT_BIN:-$ROOT/target/release/auxot}
TOOLS="$ROOT/target/release/examples/bench_tools"
OUT_DIR="$HERE/results"
PROXY_CPU=0
LOAD_CPU=1

log() { printf '[compare] %s\n' "$*" >&2; }
die() { printf '[compare] error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

for tool in curl python3 wrk nginx taskset; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y wrk nginx-light)"
done
(($(nproc) >= 2)) || die "needs 2 CPUs (proxy on one, load on the other)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/auxot-compare.XXXXXX")
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local status=$?
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
    if [[ $status -ne 0 ]]; then
        for f in "$WORK"/*.log; do
            [[ -s $f ]] || continue
            log "--- last lines of $(basename "$f") ---"
            tail -n 20 "$f" >&2 || true
        done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release (auxot + bench_tools, symbols and frame pointers kept for perf)"
    build_release
fi
[[ -x $BIN ]] || die "$BIN is missing"
[[ -x $TOOLS ]] || die "$TOOLS is missing"


# 1. The mock upstream, on the load CPU.
taskset -c $LOAD_CPU "$TOOLS" mock --port-file "$WORK/mock.port" >"$WORK/mock.log" 2>&1 &
PIDS+=("$!")
wait_port_file "$WORK/mock.port" || die "mock upstream did not start"
MOCK="http://127.0.0.1:$(cat "$WORK/mock.port")"
log "mock upstream on $MOCK"

# 2. nginx, a keep-alive reverse proxy in front of the same mock, on the proxy CPU.
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
user root;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
    access_log $WORK/nginx/access.log combined buffer=64k flush=1s;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    keepalive_requests 1000000;
    upstream mock { server ${MOCK#http://}; keepalive 128; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }
    }
}
EOF
taskset -c $PROXY_CPU nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
NGINX="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 50); do curl -sf --max-time 1 -o /dev/null "$NGINX/v1/models" && break; sleep 0.1; done
curl -sf --max-time 1 -o /dev/null "$NGINX/v1/models" || die "nginx did not start"
log "nginx on $NGINX"

# 3. The hyper floor, on the proxy CPU.
taskset -c $PROXY_CPU "$TOOLS" floor --upstream "$MOCK" --port-file "$WORK/floor.port" >"$WORK/floor.log" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_port_file "$WORK/floor.port" || die "the hyper floor did not start"
FLOOR="http://127.0.0.1:$(cat "$WORK/floor.port")"
log "hyper floor on $FLOOR"

# 4. auxot, on the proxy CPU, with a throwaway data dir; log at its default level (info).
AUXOT_PORT=$(free_port)
AUXOT="http://127.0.0.1:$AUXOT_PORT"
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
env -u AUXOT_SECRET_KEY_FILE -u AUXOT_LISTEN -u AUXOT_DATA_DIR -u AUXOT_LOG_FORMAT -u RUST_LOG \
    AUXOT_SECRET_KEY="$SECRET" taskset -c $PROXY_CPU \
    "$BIN" serve --listen "127.0.0.1:$AUXOT_PORT" --data-dir "$WORK/data" >"$WORK/auxot.log" 2>&1 &
AUXOT_PID=$!
PIDS+=("$AUXOT_PID")
for _ in $(seq 100); do
    curl -sf --max-time 1 "$AUXOT/healthz" >/dev/null 2>&1 && break
    kill -0 "$AUXOT_PID" 2>/dev/null || die "auxot exited during start-up"
    sleep 0.1
done
curl -sf --max-time 1 "$AUXOT/healthz" >/dev/null || die "auxot did not answer /healthz"
JAR="$WORK/cookies"
api() { curl -sS --fail-with-body --max-time 15 -b "$JAR" -c "$JAR" -X "$1" "$AUXOT$2" -H 'content-type: application/json' -d "$3"; }
CREDS='{"username":"admin","password":"password123"}'
api POST /api/setup "$CREDS" >/dev/null || die "setup failed"
api POST /api/login "$CREDS" >/dev/null || die "login failed"
CLIENT_KEY=$(api POST /api/api-keys '{"name":"bench","role":"client"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') || die "api key creation failed"
api POST /api/providers \
    "{\"name\":\"mock\",\"type\":\"openai\",\"api_key\":\"$UPSTREAM_KEY\",\"base_url\":\"$MOCK/v1\"}" >/dev/null ||
    die "adding the provider failed"
log "auxot on $AUXOT (client key and provider 'mock' created)"

PLAIN='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
STREAM='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count."}],"stream":true}'
for base in "$MOCK:$UPSTREAM_KEY" "$NGINX:$UPSTREAM_KEY" "$FLOOR:$UPSTREAM_KEY" "$AUXOT:$CLIENT_KEY"; do
    url=${base%:*} token=${base##*:}
    curl -sf --max-time 5 "$url/v1/chat/completions" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -d "$PLAIN" | grep -q '"chat.completion"' || die "$url: no completion"
    curl -sf --max-time 5 "$url/v1/chat/completions" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -d "$STREAM" | grep -q 'data: \[DONE\]' || die "$url: no stream"
done
log "sanity checks passed"

nginx_pids() { echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }
proxy_pids() {
    case $1 in nginx) nginx_pids ;; floor) echo "$FLOOR_PID" ;; auxot) echo "$AUXOT_PID" ;; esac
}
url_of() { case $1 in direct) echo "$MOCK" ;; nginx) echo "$NGINX" ;; floor) echo "$FLOOR" ;; auxot) echo "$AUXOT" ;; esac; }
token_of() { if [[ $1 == auxot ]]; then echo "$CLIENT_KEY"; else echo "$UPSTREAM_KEY"; fi; }
CLK_TCK=$(getconf CLK_TCK)

RSS_IDLE_AUXOT=$(rss_kb "$AUXOT_PID")
RSS_IDLE_NGINX=$(rss_kb $(nginx_pids))

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
wrk_case() { # wrk_case ROUND TARGET CONCURRENCY
    local round=$1 target=$2 conc=$3 url token pids before after line
    url="$(url_of "$target")/v1/chat/completions"
    token=$(token_of "$target")
    BENCH_AUTH=$token BENCH_STREAM=0 timeout $((WARMUP + 15)) taskset -c $LOAD_CPU \
        wrk -t1 -c"$conc" -d"${WARMUP}s" --timeout 5s -s "$HERE/chat.lua" "$url" >>"$WORK/wrk.log" 2>&1 ||
        die "wrk warm-up failed"
    pids=$(proxy_pids "$target")
    before=$(cpu_ticks $pids)
    BENCH_AUTH=$token BENCH_STREAM=0 timeout $((DURATION + 15)) taskset -c $LOAD_CPU \
        wrk -t1 -c"$conc" -d"${DURATION}s" --timeout 5s -s "$HERE/chat.lua" "$url" >"$WORK/wrk.out" 2>&1 ||
        die "wrk failed"
    after=$(cpu_ticks $pids)
    cat "$WORK/wrk.out" >>"$WORK/wrk.log"
    line=$(grep '^BENCH_RESULT ' "$WORK/wrk.out") || die "no result line from wrk"
    printf 'wrk\t%s\t%s\t%s\t%s cpu_ticks=%s\n' "$round" "$target" "$conc" "${line#BENCH_RESULT }" \
        "$((after - before))" >>"$RESULTS"
}
ttfc_case() { # ttfc_case ROUND TARGET
    local line
    line=$(taskset -c $LOAD_CPU "$TOOLS" ttfc --url "$(url_of "$2")/v1/chat/completions" \
        --token "$(token_of "$2")" --n 2000 --warmup 200 2>>"$WORK/ttfc.log") || die "ttfc on $2 failed"
    printf 'ttfc\t%s\t%s\t1\t%s\n' "$1" "$2" "${line#TTFC_RESULT }" >>"$RESULTS"
}

SAMPLES="$WORK/busy.log"
( while :; do
    if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; then echo busy; else echo idle; fi
    sleep 2
done ) >"$SAMPLES" 2>/dev/null &
SAMPLER=$!
PIDS+=("$SAMPLER")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    for target in direct nginx floor auxot; do
        log "round $round/$ROUNDS: $target c=1, c=64, ttfc"
        wrk_case "$round" "$target" 1
        wrk_case "$round" "$target" 64
        ttfc_case "$round" "$target"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

RSS_LOAD_AUXOT=$(rss_kb "$AUXOT_PID")
RSS_LOAD_NGINX=$(rss_kb $(nginx_pids))

hold_streams() { # hold_streams TARGET -> RSS of the proxy with 1,000 streams open
    local target=$1 fifo="$WORK/hold.$1" pid rss line
    taskset -c $LOAD_CPU "$TOOLS" hold --url "$(url_of "$target")/v1/chat/completions" \
        --token "$(token_of "$target")" --n 1000 --secs 10 >"$fifo" 2>>"$WORK/hold.log" &
    pid=$!
    for _ in $(seq 300); do grep -q '^ready' "$fifo" && break; sleep 0.1; done
    line=$(grep '^ready' "$fifo" || echo "ready open=0 failed=?")
    sleep 1
    rss=$(rss_kb $(proxy_pids "$target"))
    wait "$pid" 2>/dev/null || true
    echo "$rss ${line#ready }"
}
log "1,000 open streams through nginx"
HOLD_NGINX=$(hold_streams nginx)
log "1,000 open streams through auxot"
HOLD_AUXOT=$(hold_streams auxot)
sleep 2

if [[ ${BENCH_PERF:-0} == 1 ]]; then
    command -v perf >/dev/null || die "perf not found (apt-get install -y linux-perf)"
    log "perf: auxot at c=64 for ${DURATION}s"
    BENCH_AUTH=$CLIENT_KEY BENCH_STREAM=0 taskset -c $LOAD_CPU \
        wrk -t1 -c64 -d"$((DURATION + 2))s" --timeout 5s -s "$HERE/chat.lua" "$AUXOT/v1/chat/completions" \
        >"$WORK/wrk-perf.out" 2>&1 &
    WRK_PERF=$!
    sleep 1
    perf record -F 1999 -g -p "$AUXOT_PID" -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 ||
        die "perf record failed"
    wait "$WRK_PERF" || true
    PERF_REQUESTS=$(grep -oP 'BENCH_RESULT requests=\K[0-9]+' "$WORK/wrk-perf.out" || echo 0)
    [[ -n ${BENCH_PERF_DATA:-} ]] && cp "$WORK/perf.data" "$BENCH_PERF_DATA"
    mkdir -p "$OUT_DIR"
    {
        echo "# perf: auxot at c=64, ${BENCH_LABEL:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)}"
        echo "# requests in the wrk run around the profile: $PERF_REQUESTS"
        echo "## self time by symbol (top 45)"
        perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
            grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' |
            awk 'NR <= 45' || true
        echo "## inclusive time by symbol (top 60)"
        perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' |
            awk 'NR <= 60' || true
        echo "## inclusive time of auxot's own functions (top 30)"
        perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null |
            grep -E '^ +[0-9].*auxot::' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' |
            awk 'NR <= 30' || true
    } >"$OUT_DIR/perf-auxot.txt"
    log "profile written to ${OUT_DIR#"$ROOT"/}/perf-auxot.txt"
fi
kill "$SAMPLER" 2>/dev/null || true
kill -0 "$AUXOT_PID" 2>/dev/null || die "auxot died during the run"

export BENCH_INFO
BENCH_INFO=$(cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC'); run: ${BENCH_LABEL:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
- machine: $(nproc) CPUs ($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(uname -sr)
- $(nginx -v 2>&1), $( (wrk --version 2>&1 || true) | head -n1 | awk '{print $1, $2}'), $(rustc --version 2>/dev/null || echo rustc unknown)
- proxy pinned to CPU $PROXY_CPU; wrk, probes and the mock upstream on CPU $LOAD_CPU; $ROUNDS rounds of ${WARMUP}s warm-up + ${DURATION}s per wrk case, medians shown
- load average before/after: $LOAD_BEFORE / $LOAD_AFTER; compile jobs (rustc/cargo) seen in $(grep -c '^busy' "$SAMPLES" || true) of $(grep -c . "$SAMPLES" || true) samples (2 s apart)
EOF
)
export RSS_IDLE_AUXOT RSS_IDLE_NGINX RSS_LOAD_AUXOT RSS_LOAD_NGINX HOLD_NGINX HOLD_AUXOT CLK_TCK
mkdir -p "$OUT_DIR"
python3 - "$RESULTS" >"$WORK/report.md" <<'PY'
import os, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    kind, rnd, target, conc, fields = line.rstrip("\n").split("\t")
    r = {k: float(v) for k, v in (kv.split("=", 1) for kv in fields.split())}
    if kind == "wrk":
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
    runs[(kind, target, int(conc))].append(r)

e = os.environ
tck = float(e["CLK_TCK"])
med = lambda kind, target, conc, key: statistics.median(r[key] for r in runs[(kind, target, conc)])
allv = lambda kind, target, conc, key, f: " / ".join(f(r[key]) for r in runs[(kind, target, conc)])
ms = lambda us: f"{us / 1000:.3f}"

print("# auxot beside nginx, one proxy core\n")
print(e["BENCH_INFO"] + "\n")
print("| same run | direct (no proxy) | nginx | hyper floor | auxot | auxot ÷ nginx | floor ÷ nginx |")
print("|---|---:|---:|---:|---:|---:|---:|")
ALL = ("direct", "nginx", "floor", "auxot")
for key, label in (("p50_us", "c=1 p50 ms"), ("p99_us", "c=1 p99 ms")):
    d, n, f, a = (med("wrk", t, 1, key) for t in ALL)
    print(f"| {label} | {ms(d)} | {ms(n)} | {ms(f)} | {ms(a)} | | |")
    ratio = lambda x: f"{(x - d) / max(n - d, 1e-9):.2f}×"
    print(f"| added {label} | | +{ms(n - d)} | +{ms(f - d)} | +{ms(a - d)} | {ratio(a)} | {ratio(f)} |")
d, n, f, a = (med("wrk", t, 64, "rps") for t in ALL)
print(f"| max req/s at c=64 | {d:,.0f} | {n:,.0f} | {f:,.0f} | {a:,.0f} | {a / n:.2f}× | {f / n:.2f}× |")
cpu = {}
for t in ("nginx", "floor", "auxot"):
    cpu[t] = statistics.median(r["cpu_ticks"] / tck * 1e6 / max(r["requests"], 1) for r in runs[("wrk", t, 64)])
print(f"| proxy CPU µs per request (c=64) | | {cpu['nginx']:.1f} | {cpu['floor']:.1f} | {cpu['auxot']:.1f} "
      f"| {cpu['auxot'] / cpu['nginx']:.2f}× | {cpu['floor'] / cpu['nginx']:.2f}× |")
d, n, f, a = (med("ttfc", t, 1, "p50_us") for t in ALL)
print(f"| stream time to first chunk p50 ms | {ms(d)} | {ms(n)} | {ms(f)} | {ms(a)} | | |")
ratio = lambda x: f"{(x - d) / max(n - d, 1e-9):.2f}×"
print(f"| added TTFC p50 ms | | +{ms(n - d)} | +{ms(f - d)} | +{ms(a - d)} | {ratio(a)} | {ratio(f)} |")
mb = lambda kb: f"{int(kb) / 1024:.1f}"
hn, ha = e["HOLD_NGINX"].split(" ", 1), e["HOLD_AUXOT"].split(" ", 1)
print(f"| RSS MB idle | | {mb(e['RSS_IDLE_NGINX'])} | | {mb(e['RSS_IDLE_AUXOT'])} | | |")
print(f"| RSS MB after the load | | {mb(e['RSS_LOAD_NGINX'])} | | {mb(e['RSS_LOAD_AUXOT'])} | | |")
print(f"| RSS MB with 1,000 streams open | | {mb(hn[0])} ({hn[1]}) | | {mb(ha[0])} ({ha[1]}) | | |")

print("\n## Every round\n")
print("| case | direct | nginx | hyper floor | auxot |")
print("|---|---|---|---|---|")
print("| c=1 p50 ms | " + " | ".join(allv("wrk", t, 1, "p50_us", ms) for t in ALL) + " |")
print("| c=1 p99 ms | " + " | ".join(allv("wrk", t, 1, "p99_us", ms) for t in ALL) + " |")
print("| c=64 req/s | " + " | ".join(allv("wrk", t, 64, "rps", lambda v: f"{v:,.0f}") for t in ALL) + " |")
print("| TTFC p50 ms | " + " | ".join(allv("ttfc", t, 1, "p50_us", ms) for t in ALL) + " |")
print("| TTFC p99 ms | " + " | ".join(allv("ttfc", t, 1, "p99_us", ms) for t in ALL) + " |")
errors = sum(r["errors"] for k, rs in runs.items() if k[0] == "wrk" for r in rs)
if errors:
    print(f"\n**Warning:** {int(errors)} wrk request(s) failed; see wrk's output.")
PY
cp "$WORK/report.md" "$OUT_DIR/compare.md"
cat "$WORK/report.md"
log "written to ${OUT_DIR#"$ROOT"/}/compare.md"
