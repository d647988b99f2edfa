#!/usr/bin/env bash
# How much latency does auxot add on the hot path, compared with calling the upstream directly?
#
#   bash bench/run.sh
#
# Builds the release binary, starts a fast fake OpenAI upstream (bench/fake_upstream.py) and
# auxot on 127.0.0.1, wires them together through the admin API, then drives both with wrk:
# non-streaming and streaming chat completions, direct vs. through auxot, at each concurrency.
# Prints a Markdown report and writes it to bench/results/latest.md. This is a report, not a
# test: nothing is asserted about timings.
#
# Needs: cargo, curl, python3, wrk (Debian/Ubuntu: apt-get install -y wrk).
# Knobs (environment): BENCH_DURATION seconds per measurement (10), BENCH_WARMUP seconds of
# unrecorded warm-up before each (2), BENCH_CONCURRENCY list ("1 32"), BENCH_THREADS wrk
# threads (1), BENCH_SKIP_BUILD=1 to reuse target/release/auxot as it is, BENCH_SOURCE_COMMIT
# to name the source when the tree is not a git checkout (e.g. a `git archive` export).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONCURRENCY=${BENCH_CONCURRENCY:-"1 32"}
THREADS=${BENCH_THREADS:-1}
UPSTREAM_KEY="sk-bench-key-000000000000"
BIN="$ROOT/target/release/auxot"
OUT_DIR="$HERE/results"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

for tool in curl python3 wrk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (wrk: apt-get install -y wrk)"
done

# The real interpreter, not a version-manager shim: the pid we kill must be the server's own.
PYTHON=$(python3 -c 'import sys; print(sys.executable)')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/auxot-bench.XXXXXX")
PIDS=()
cleanup() {
    local status=$?
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do
        wait "$pid" 2>/dev/null || true
    done
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

# ---------------------------------------------------------------------------------------------
# 1. Build.
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "release build failed"
fi
[[ -x $BIN ]] || die "$BIN is missing"

# ---------------------------------------------------------------------------------------------
# 2. Fake upstream (binds port 0 and reports the port it got).
"$PYTHON" "$HERE/fake_upstream.py" --host 127.0.0.1 --port 0 --port-file "$WORK/fake.port" \
    >"$WORK/fake.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do [[ -s $WORK/fake.port ]] && break; sleep 0.1; done
[[ -s $WORK/fake.port ]] || die "fake upstream did not start"
FAKE_PORT=$(cat "$WORK/fake.port")
FAKE="http://127.0.0.1:$FAKE_PORT"
log "fake upstream on $FAKE"

# ---------------------------------------------------------------------------------------------
# 3. auxot, on a free port, with a throwaway data dir and secret key.
AUXOT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AUXOT="http://127.0.0.1:$AUXOT_PORT"
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
env -u AUXOT_SECRET_KEY_FILE -u AUXOT_LISTEN -u AUXOT_DATA_DIR -u AUXOT_LOG_FORMAT \
    AUXOT_SECRET_KEY="$SECRET" RUST_LOG=warn \
    "$BIN" serve --listen "127.0.0.1:$AUXOT_PORT" --data-dir "$WORK/data" >"$WORK/auxot.log" 2>&1 &
AUXOT_PID=$!
PIDS+=("$AUXOT_PID")
for _ in $(seq 100); do
    curl -sf --max-time 1 "$AUXOT/healthz" >/dev/null 2>&1 && break
    kill -0 "$AUXOT_PID" 2>/dev/null || die "auxot exited during start-up"
    sleep 0.1
done
curl -sf --max-time 1 "$AUXOT/healthz" >/dev/null || die "auxot did not answer /healthz"
log "auxot on $AUXOT"

JAR="$WORK/cookies"
api() { # api METHOD PATH JSON -> body on stdout; fails on a non-2xx answer
    curl -sS --fail-with-body --max-time 15 -b "$JAR" -c "$JAR" -X "$1" "$AUXOT$2" \
        -H 'content-type: application/json' -d "$3"
}
CREDS='{"username":"admin","password":"password123"}'
api POST /api/setup "$CREDS" >/dev/null || die "setup failed"
api POST /api/login "$CREDS" >/dev/null || die "login failed"
CLIENT_KEY=$(api POST /api/api-keys '{"name":"bench","role":"client"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') || die "api key creation failed"
api POST /api/providers \
    "{\"name\":\"fake\",\"type\":\"openai\",\"api_key\":\"$UPSTREAM_KEY\",\"base_url\":\"$FAKE/v1\"}" \
    >/dev/null || die "adding the provider failed"
log "admin, client key and provider 'fake' created"

# Sanity: both paths answer 200, auxot routes to 'fake', and streams end with [DONE].
check() { # check BASE TOKEN BODY EXPECT
    local headers="$WORK/check.headers" body="$WORK/check.body" code
    code=$(curl -sS --max-time 10 -o "$body" -D "$headers" -w '%{http_code}' "$1/v1/chat/completions" \
        -H "Authorization: Bearer $2" -H 'content-type: application/json' -d "$3")
    [[ $code == 200 ]] || die "$1 answered $code: $(head -c 300 "$body")"
    grep -q -- "$4" "$body" || die "$1: reply lacks $4"
    if [[ $1 == "$AUXOT" ]]; then
        grep -qi '^x-auxot-route: fake' "$headers" || die "auxot did not route to the fake provider"
    fi
}
PLAIN='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]}'
STREAM='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count."}],"stream":true}'
check "$FAKE" "$UPSTREAM_KEY" "$PLAIN" '"chat.completion"'
check "$AUXOT" "$CLIENT_KEY" "$PLAIN" '"chat.completion"'
check "$FAKE" "$UPSTREAM_KEY" "$STREAM" 'data: \[DONE\]'
check "$AUXOT" "$CLIENT_KEY" "$STREAM" 'data: \[DONE\]'
log "sanity checks passed"

# ---------------------------------------------------------------------------------------------
# 4. Measure. Each case: an unrecorded warm-up, then DURATION seconds recorded.
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
measure() { # measure MODE(plain|stream) TARGET(direct|auxot) CONCURRENCY
    local mode=$1 target=$2 conc=$3 url token stream=0 threads=$THREADS line
    if [[ $target == direct ]]; then url="$FAKE/v1/chat/completions"; token=$UPSTREAM_KEY
    else url="$AUXOT/v1/chat/completions"; token=$CLIENT_KEY; fi
    [[ $mode == stream ]] && stream=1
    ((threads > conc)) && threads=$conc
    log "$mode / $target / c=$conc: ${WARMUP}s warm-up + ${DURATION}s"
    if ((WARMUP > 0)); then
        BENCH_AUTH=$token BENCH_STREAM=$stream timeout $((WARMUP + 15)) \
            wrk -t"$threads" -c"$conc" -d"${WARMUP}s" --timeout 5s -s "$HERE/chat.lua" "$url" \
            >>"$WORK/wrk.log" 2>&1 || die "wrk warm-up failed"
    fi
    BENCH_AUTH=$token BENCH_STREAM=$stream timeout $((DURATION + 15)) \
        wrk -t"$threads" -c"$conc" -d"${DURATION}s" --timeout 5s -s "$HERE/chat.lua" "$url" \
        >"$WORK/wrk.out" 2>&1 || { cat "$WORK/wrk.out" >>"$WORK/wrk.log"; die "wrk failed"; }
    cat "$WORK/wrk.out" >>"$WORK/wrk.log"
    line=$(grep '^BENCH_RESULT ' "$WORK/wrk.out") || die "no result line from wrk"
    printf '%s\t%s\t%s\t%s\n' "$mode" "$target" "$conc" "${line#BENCH_RESULT }" >>"$RESULTS"
}
# Noise check: every 2 s, note whether a compiler or cargo (a concurrent build, CI) is running.
# The wait is a builtin read on a private fifo, so killing the sampler leaves no child behind.
mkfifo "$WORK/tick"
(
    exec 3<>"$WORK/tick"
    while :; do
        if pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; then echo busy; else echo idle; fi
        read -r -t 2 -u 3 _ || true
    done
) >"$WORK/others.log" 2>/dev/null &
SAMPLER=$!
PIDS+=("$SAMPLER")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for conc in $CONCURRENCY; do
    for mode in plain stream; do
        measure "$mode" direct "$conc"
        measure "$mode" auxot "$conc"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
kill "$SAMPLER" 2>/dev/null || true
kill -0 "$AUXOT_PID" 2>/dev/null || die "auxot died during the run"
BUSY_SAMPLES=$(grep -c '^busy' "$WORK/others.log" || true)
ALL_SAMPLES=$(grep -c . "$WORK/others.log" || true)

# ---------------------------------------------------------------------------------------------
# 5. Report.
if [[ -n ${BENCH_SOURCE_COMMIT:-} ]]; then # set when benchmarking an exported tree (git archive)
    COMMIT=$BENCH_SOURCE_COMMIT
else
    COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        COMMIT="$COMMIT (+ uncommitted changes in src/ or Cargo.*)"
    fi
fi
export BENCH_MACHINE_CPU BENCH_MACHINE_NPROC BENCH_DATE BENCH_COMMIT BENCH_KERNEL BENCH_RUSTC BENCH_WRK \
    BENCH_PYTHON BENCH_LOAD BENCH_LOAD_AFTER BENCH_BUSY BENCH_SAMPLES BENCH_DURATION_S BENCH_WARMUP_S BENCH_THREADS_N
BENCH_MACHINE_CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)
BENCH_MACHINE_NPROC=$(nproc)
BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
BENCH_COMMIT=$COMMIT
BENCH_KERNEL=$(uname -sr)
BENCH_RUSTC=$(rustc --version 2>/dev/null || echo unknown)
BENCH_WRK=$( (wrk --version 2>&1 || true) | head -n1 | awk '{print $1, $2}')
BENCH_PYTHON=$(python3 --version 2>&1)
BENCH_LOAD=$LOAD_BEFORE
BENCH_LOAD_AFTER=$LOAD_AFTER
BENCH_BUSY=$BUSY_SAMPLES
BENCH_SAMPLES=$ALL_SAMPLES
BENCH_DURATION_S=$DURATION
BENCH_WARMUP_S=$WARMUP
BENCH_THREADS_N=$THREADS

mkdir -p "$OUT_DIR"
python3 - "$RESULTS" >"$WORK/report.md" <<'PY'
import os, sys

rows = {}
order = []
for line in open(sys.argv[1]):
    mode, target, conc, fields = line.rstrip("\n").split("\t")
    r = dict(kv.split("=", 1) for kv in fields.split())
    r = {k: float(v) for k, v in r.items()}
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = int(sum(r[k] for k in r if k.startswith("err_")))
    rows[(mode, target, int(conc))] = r
    if (mode, int(conc)) not in order:
        order.append((mode, int(conc)))

ms = lambda us: f"{us / 1000:.3f}"
label = {"plain": "non-streaming", "stream": "streaming (20 chunks + [DONE])"}
e = os.environ
print("# auxot hot-path overhead\n")
print(f"- date: {e['BENCH_DATE']}")
print(f"- auxot commit: {e['BENCH_COMMIT']}")
print(f"- machine: {e['BENCH_MACHINE_NPROC']} CPUs ({e['BENCH_MACHINE_CPU']}), {e['BENCH_KERNEL']}")
print(f"- load average (1/5/15 min) before measuring: {e['BENCH_LOAD']}; after: {e['BENCH_LOAD_AFTER']}")
busy, samples = int(e['BENCH_BUSY'] or 0), int(e['BENCH_SAMPLES'] or 0)
note = "none seen" if busy == 0 else f"running in {busy} of {samples} samples: expect noisier numbers"
print(f"- other compile jobs (rustc/cargo) during the measurements, sampled every 2 s: {note}")
print(f"- tools: {e['BENCH_RUSTC']}, {e['BENCH_WRK']} ({e['BENCH_THREADS_N']} thread), {e['BENCH_PYTHON']} "
      "for the fake upstream")
print(f"- each row: {e['BENCH_WARMUP_S']} s warm-up (not recorded), then {e['BENCH_DURATION_S']} s with wrk "
      "over keep-alive connections; latency = request written to last byte of the response read")
print("- load generator, fake upstream and auxot all run on this machine and share its CPUs\n")

print("## Raw results\n")
print("| request | path | concurrency | req/s | p50 ms | p90 ms | p99 ms | errors |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for mode, conc in order:
    for target in ("direct", "auxot"):
        r = rows.get((mode, target, conc))
        if r is None:
            continue
        path = "direct to upstream" if target == "direct" else "through auxot"
        print(f"| {label[mode]} | {path} | {conc} | {r['rps']:,.0f} | {ms(r['p50_us'])} | "
              f"{ms(r['p90_us'])} | {ms(r['p99_us'])} | {r['errors']} |")

print("\n## Added by auxot (through auxot minus direct)\n")
print("| request | concurrency | added p50 ms | added p90 ms | added p99 ms | throughput through auxot vs direct |")
print("|---|---:|---:|---:|---:|---:|")
for mode, conc in order:
    d, a = rows.get((mode, "direct", conc)), rows.get((mode, "auxot", conc))
    if d is None or a is None:
        continue
    delta = lambda k: f"{(a[k] - d[k]) / 1000:+.3f}"
    print(f"| {label[mode]} | {conc} | {delta('p50_us')} | {delta('p90_us')} | {delta('p99_us')} | "
          f"{a['rps'] / d['rps'] * 100:.0f} % |")

errors = sum(r["errors"] for r in rows.values())
if errors:
    print(f"\n**Warning:** {errors} request(s) failed (socket errors or non-2xx answers); see wrk's output.")
PY

cp "$WORK/report.md" "$OUT_DIR/latest.md"
cat "$WORK/report.md"
log "written to ${OUT_DIR#"$ROOT"/}/latest.md"
