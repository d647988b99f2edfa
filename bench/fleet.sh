#!/usr/bin/env bash
# One router or two on one PostgreSQL, on the same box, behind the same nginx load balancer:
# what does the second router give, and what does PostgreSQL cost next to redb?
#
#   bash bench/fleet.sh
#
# Started once, on 127.0.0.1 only: the mock upstream (`bench_tools mock`), a throwaway
# PostgreSQL cluster (initdb in a temp dir, default durability: fsync and synchronous_commit
# on), router A and router B on that database (same secret key), router R on its own redb
# file, and one nginx (1 worker, keep-alive both ways) with three upstreams, each a port:
#   redb×1 → R,  pg×1 → A,  pg×2 → A and B (round robin),
# so every case goes through the same load balancer (the reference deployment of
# docs/scale-out.md). Each round measures every case: c=1 closed loop (wrk: p50, p99) and
# c=64 (wrk: req/s, and the CPU time of the routers, of PostgreSQL and of nginx per request),
# plus the mock called directly for the added latency. Medians of BENCH_ROUNDS rounds.
#
# Nothing is pinned: the routers, PostgreSQL, nginx, wrk and the mock share the machine's
# CPUs, as two routers on one box would. On a 2-CPU box a second router cannot add CPU, so
# this shows what sharing costs, not how a fleet of separate boxes scales.
#
# Needs: cargo, curl, python3, wrk, nginx, PostgreSQL server binaries (apt-get install -y wrk
# nginx-light postgresql). Knobs: BENCH_ROUNDS (3), BENCH_DURATION (8), BENCH_WARMUP (2),
# BENCH_SKIP_BUILD=1, AUXOT_BIN, BENCH_LABEL. Report: bench/results/fleet.md.
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

log() { printf '[fleet] %s\n' "$*" >&2; }
die() { printf '[fleet] error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"

for tool in curl python3 wrk nginx; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install -y wrk nginx-light)"
done
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[[ -x $PG_BIN/initdb ]] || die "no initdb under /usr/lib/postgresql/*/bin (apt-get install -y postgresql)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/auxot-fleet.XXXXXX")
chmod 755 "$WORK"
PIDS=()
PG_DATA="$WORK/pg"
AS_PG=()
cleanup() {
    local status=$?
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
    if [[ -f $PG_DATA/postmaster.pid ]]; then
        ${AS_PG[@]+"${AS_PG[@]}"} "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
    fi
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
    log "cargo build --release (auxot + bench_tools)"
    build_release
fi
[[ -x $BIN ]] || die "$BIN is missing"
[[ -x $TOOLS ]] || die "$TOOLS is missing"


# 1. The mock upstream.
"$TOOLS" mock --port-file "$WORK/mock.port" >"$WORK/mock.log" 2>&1 &
PIDS+=("$!")
wait_port_file "$WORK/mock.port" || die "mock upstream did not start"
MOCK="http://127.0.0.1:$(cat "$WORK/mock.port")"

# 2. PostgreSQL: initdb refuses root, so as root the cluster belongs to the postgres user.
if [[ $(id -u) == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user for the cluster"
    AS_PG=(runuser -u postgres --)
fi
mkdir -p "$PG_DATA" && chmod 700 "$PG_DATA"
[[ $(id -u) == 0 ]] && chown postgres "$PG_DATA"
PG_PORT=$(free_port)
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U auxot --auth=trust --encoding=UTF8 --locale=C \
    >"$WORK/initdb.log" 2>&1 || die "initdb failed"
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w \
    -o "-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1 -c max_connections=200" start \
    >/dev/null || die "postgres did not start"
PG_PID=$(head -n1 "$PG_DATA/postmaster.pid")
DB_URL="postgres://auxot@127.0.0.1:$PG_PORT/postgres"
log "postgres on port $PG_PORT"

# 3. The routers: A and B on PostgreSQL, R on redb; the same secret for all.
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
start_router() { # start_router NAME ARGS... -> sets ROUTER_URL and ROUTER_PID
    local name=$1 port
    shift
    port=$(free_port)
    env -u AUXOT_SECRET_KEY_FILE -u AUXOT_LISTEN -u AUXOT_DATA_DIR -u AUXOT_LOG_FORMAT -u RUST_LOG \
        -u AUXOT_DATABASE_URL AUXOT_SECRET_KEY="$SECRET" \
        "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$WORK/data-$name" --router-name "$name" "$@" \
        >"$WORK/router-$name.log" 2>&1 &
    ROUTER_PID=$!
    PIDS+=("$ROUTER_PID")
    ROUTER_URL="http://127.0.0.1:$port"
    for _ in $(seq 150); do
        curl -sf --max-time 1 "$ROUTER_URL/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$ROUTER_PID" 2>/dev/null || die "router $name exited during start-up"
        sleep 0.1
    done
    die "router $name did not answer /healthz"
}
start_router a --database "$DB_URL"
A_URL=$ROUTER_URL A_PID=$ROUTER_PID
start_router b --database "$DB_URL"
B_URL=$ROUTER_URL B_PID=$ROUTER_PID
start_router r
R_URL=$ROUTER_URL R_PID=$ROUTER_PID

# One admin, one client key and the mock as a provider, per database.
setup_db() { # setup_db ROUTER_URL -> prints the client key
    local url=$1 jar="$WORK/jar.$RANDOM" creds='{"username":"admin","password":"password123"}'
    api() { curl -sS --fail-with-body --max-time 15 -b "$jar" -c "$jar" -X "$1" "$url$2" -H 'content-type: application/json' -d "$3"; }
    api POST /api/setup "$creds" >/dev/null || die "setup on $url failed"
    api POST /api/login "$creds" >/dev/null || die "login on $url failed"
    api POST /api/providers \
        "{\"name\":\"mock\",\"type\":\"openai\",\"api_key\":\"$UPSTREAM_KEY\",\"base_url\":\"$MOCK/v1\"}" >/dev/null ||
        die "adding the provider on $url failed"
    api POST /api/api-keys '{"name":"bench","role":"client"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])' || die "api key creation on $url failed"
}
PG_KEY=$(setup_db "$A_URL")
REDB_KEY=$(setup_db "$R_URL")

# 4. nginx in front: one port per case.
declare -A LB_PORT
for case in redb1 pg1 pg2; do LB_PORT[$case]=$(free_port); done
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
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    keepalive_requests 1000000;
    upstream redb1 { server ${R_URL#http://}; keepalive 128; keepalive_requests 1000000; }
    upstream pg1 { server ${A_URL#http://}; keepalive 128; keepalive_requests 1000000; }
    upstream pg2 { server ${A_URL#http://}; server ${B_URL#http://}; keepalive 128; keepalive_requests 1000000; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_read_timeout 120s;
    server { listen 127.0.0.1:${LB_PORT[redb1]}; location / { proxy_pass http://redb1; } }
    server { listen 127.0.0.1:${LB_PORT[pg1]}; location / { proxy_pass http://pg1; } }
    server { listen 127.0.0.1:${LB_PORT[pg2]}; location / { proxy_pass http://pg2; } }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

url_of() { case $1 in direct) echo "$MOCK" ;; *) echo "http://127.0.0.1:${LB_PORT[$1]}" ;; esac; }
token_of() { case $1 in direct) echo "$UPSTREAM_KEY" ;; redb1) echo "$REDB_KEY" ;; *) echo "$PG_KEY" ;; esac; }
router_pids() { case $1 in redb1) echo "$R_PID" ;; pg1) echo "$A_PID" ;; pg2) echo "$A_PID $B_PID" ;; *) echo "" ;; esac; }
pg_pids() { echo "$PG_PID $(pgrep -P "$PG_PID" | tr '\n' ' ')"; }
nginx_pids() { echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }
CLK_TCK=$(getconf CLK_TCK)

PLAIN='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
for case in direct redb1 pg1 pg2; do
    for _ in 1 2; do # pg2 alternates: both routers must answer
        curl -sf --max-time 5 "$(url_of $case)/v1/chat/completions" -H "authorization: Bearer $(token_of $case)" \
            -H 'content-type: application/json' -d "$PLAIN" | grep -q '"chat.completion"' || die "$case: no completion"
    done
done
log "sanity checks passed (redb×1, pg×1, pg×2 behind nginx)"

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
wrk_case() { # wrk_case ROUND CASE CONCURRENCY
    local round=$1 case=$2 conc=$3 url token r0 p0 n0 r1 p1 n1 line
    url="$(url_of "$case")/v1/chat/completions"
    token=$(token_of "$case")
    BENCH_AUTH=$token BENCH_STREAM=0 timeout $((WARMUP + 15)) \
        wrk -t1 -c"$conc" -d"${WARMUP}s" --timeout 5s -s "$HERE/chat.lua" "$url" >>"$WORK/wrk.log" 2>&1 ||
        die "wrk warm-up failed"
    r0=$(cpu_ticks $(router_pids "$case")) p0=$(cpu_ticks $(pg_pids)) n0=$(cpu_ticks $(nginx_pids))
    BENCH_AUTH=$token BENCH_STREAM=0 timeout $((DURATION + 15)) \
        wrk -t1 -c"$conc" -d"${DURATION}s" --timeout 5s -s "$HERE/chat.lua" "$url" >"$WORK/wrk.out" 2>&1 ||
        die "wrk failed"
    r1=$(cpu_ticks $(router_pids "$case")) p1=$(cpu_ticks $(pg_pids)) n1=$(cpu_ticks $(nginx_pids))
    cat "$WORK/wrk.out" >>"$WORK/wrk.log"
    line=$(grep '^BENCH_RESULT ' "$WORK/wrk.out") || die "no result line from wrk"
    printf '%s\t%s\t%s\t%s router_ticks=%s pg_ticks=%s nginx_ticks=%s\n' "$round" "$case" "$conc" \
        "${line#BENCH_RESULT }" "$((r1 - r0))" "$((p1 - p0))" "$((n1 - n0))" >>"$RESULTS"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
    for case in direct redb1 pg1 pg2; do
        log "round $round/$ROUNDS: $case c=1, c=64"
        wrk_case "$round" "$case" 1
        wrk_case "$round" "$case" 64
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for pid in "$A_PID" "$B_PID" "$R_PID"; do kill -0 "$pid" 2>/dev/null || die "a router died during the run"; done
SERVED_A=$(grep -c . "$WORK/router-a.log" || true)
SERVED_B=$(grep -c . "$WORK/router-b.log" || true)

export BENCH_INFO CLK_TCK
BENCH_INFO=$(cat <<EOF
- date: $(date -u '+%Y-%m-%d %H:%M UTC'); run: ${BENCH_LABEL:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
- machine: $(nproc) CPUs ($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(uname -sr); nothing pinned
- $(nginx -v 2>&1) as the load balancer, $("$PG_BIN/postgres" --version), $( (wrk --version 2>&1 || true) | head -n1 | awk '{print $1, $2}')
- $ROUNDS rounds of ${WARMUP}s warm-up + ${DURATION}s per wrk case, medians shown; router log lines: a $SERVED_A, b $SERVED_B
- load average before/after: $LOAD_BEFORE / $LOAD_AFTER
EOF
)
mkdir -p "$OUT_DIR"
python3 - "$RESULTS" >"$WORK/report.md" <<'PY'
import os, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
for line in open(sys.argv[1]):
    rnd, case, conc, fields = line.rstrip("\n").split("\t")
    r = {k: float(v) for k, v in (kv.split("=", 1) for kv in fields.split())}
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = sum(r[k] for k in r if k.startswith("err_"))
    runs[(case, int(conc))].append(r)

tck = float(os.environ["CLK_TCK"])
med = lambda case, conc, f: statistics.median(f(r) for r in runs[(case, conc)])
per_req = lambda key: (lambda r: r[key] / tck * 1e6 / max(r["requests"], 1))
cases = (("redb1", "one router, redb"), ("pg1", "one router, PostgreSQL"), ("pg2", "two routers, one PostgreSQL"))
d50, d99 = med("direct", 1, lambda r: r["p50_us"]), med("direct", 1, lambda r: r["p99_us"])

print("# One router vs two on one PostgreSQL, same box, behind nginx\n")
print(os.environ["BENCH_INFO"] + "\n")
print("| same run, medians | " + " | ".join(label for _, label in cases) + " |")
print("|---|" + "---:|" * len(cases))
row = lambda label, f: print(f"| {label} | " + " | ".join(f(c) for c, _ in cases) + " |")
row("added p50 at c=1 (ms, vs the mock direct)", lambda c: f"+{(med(c, 1, lambda r: r['p50_us']) - d50) / 1000:.3f}")
row("added p99 at c=1 (ms)", lambda c: f"+{(med(c, 1, lambda r: r['p99_us']) - d99) / 1000:.3f}")
row("req/s at c=64", lambda c: f"{med(c, 64, lambda r: r['rps']):,.0f}")
row("p99 at c=64 (ms)", lambda c: f"{med(c, 64, lambda r: r['p99_us']) / 1000:.2f}")
row("router CPU µs per request (c=64, all routers)", lambda c: f"{med(c, 64, per_req('router_ticks')):.0f}")
row("PostgreSQL CPU µs per request (c=64)", lambda c: "—" if c == "redb1" else f"{med(c, 64, per_req('pg_ticks')):.0f}")
row("nginx (balancer) CPU µs per request (c=64)", lambda c: f"{med(c, 64, per_req('nginx_ticks')):.0f}")
print("\n## Every round\n")
print("| case | c=1 p50 ms | c=1 p99 ms | c=64 req/s |")
print("|---|---|---|---|")
for case in ("direct",) + tuple(c for c, _ in cases):
    rs1, rs64 = runs[(case, 1)], runs[(case, 64)]
    print(f"| {case} | " + " / ".join(f"{r['p50_us'] / 1000:.3f}" for r in rs1) + " | "
          + " / ".join(f"{r['p99_us'] / 1000:.3f}" for r in rs1) + " | "
          + " / ".join(f"{r['rps']:,.0f}" for r in rs64) + " |")
errors = sum(r["errors"] for rs in runs.values() for r in rs)
if errors:
    print(f"\n**Warning:** {int(errors)} wrk request(s) failed; see wrk's output.")
PY
cp "$WORK/report.md" "$OUT_DIR/fleet.md"
cat "$WORK/report.md"
log "written to ${OUT_DIR#"$ROOT"/}/fleet.md"
