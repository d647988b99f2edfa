# Shared by bench/compare.sh and bench/fleet.sh (sourced, not run). The caller defines
# log, die and ROOT first.

# The release build both use: symbols and frame pointers kept so perf can name functions.
# The binary is built on its own, after the tools: an example build turns on the
# dev-dependencies' features (reqwest's cookie store, for the tests), which would otherwise
# land in the auxot measured and make it differ from the one shipped.
build_release() {
    (cd "$ROOT" && export CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
        RUSTFLAGS="-C force-frame-pointers=yes" &&
        cargo build --release --quiet --example bench_tools && cargo build --release --quiet --bin auxot) ||
        die "release build failed"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port_file() { for _ in $(seq 50); do [[ -s $1 ]] && return 0; sleep 0.1; done; return 1; }
rss_kb() { # rss_kb PID... -> summed VmRSS in kB
    local total=0 pid kb
    for pid in "$@"; do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
cpu_ticks() { # cpu_ticks PID... -> summed utime+stime in clock ticks
    local total=0 pid t
    for pid in "$@"; do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
