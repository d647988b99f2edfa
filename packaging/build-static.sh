#!/bin/sh
# Build a fully static x86_64 Linux binary with the toolchain this machine has: the gnu
# target with glibc linked in statically (`+crt-static`). No toolchain is fetched.
#
# Usage: packaging/build-static.sh
#   prints the path of the binary: target/x86_64-unknown-linux-gnu/release/auxot
# Environment:
#   CARGO_TARGET_DIR  as for cargo (default: target/ in the repository)
#
# Why this works without glibc's NSS: HTTPS is rustls with bundled web PKI roots (no
# /etc/ssl), and the HTTP client resolves names with hickory (reads /etc/resolv.conf and
# /etc/hosts itself, never dlopen()s an NSS module). IP literals need neither.
set -eu

die() { printf 'build-static.sh: %s\n' "$*" >&2; exit 1; }
case ${1:-} in
    -h|--help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
    "") ;;
    *) die "no arguments expected (see --help)" ;;
esac

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
command -v cargo > /dev/null || die "cargo not found"
rustc --print target-list | grep -qx "$target" || die "rustc cannot build for $target"

# --target keeps RUSTFLAGS off build scripts and proc macros (they stay dynamic host
# programs); only the shipped binary is static. relocation-model=static makes a classic
# static executable rather than a static PIE, which still carries a dynamic section (and
# which `ldd` reports as "statically linked" instead of "not a dynamic executable").
cd "$repo"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
    cargo build --release --locked --target "$target" --bin auxot >&2

bin=${CARGO_TARGET_DIR:-$repo/target}/$target/release/auxot
[ -x "$bin" ] || die "cargo did not produce $bin"
if command -v ldd > /dev/null; then
    case $(ldd "$bin" 2>&1 || true) in
        *"not a dynamic executable"*) ;;
        *) die "$bin is dynamically linked: $(ldd "$bin" 2>&1 | tr '\n' ' ')" ;;
    esac
fi
printf '%s\n' "$bin"
