#!/usr/bin/env bash
# End-to-end tests of the web UI: builds ui/ into assets/, builds auxot, then drives the real
# `auxot serve` with headless Debian chromium (playwright-core) against a fake OpenAI upstream.
# Screenshots go to target/e2e-screenshots/ (AUXOT_UPDATE_SCREENSHOTS=1: to docs/screenshots/,
# the pictures the README shows). Exits non-zero on any failure.
#   AUXOT_BIN=path/to/auxot   use this binary instead of running `cargo build`
#   CHROMIUM_PATH=path        use this chromium instead of /usr/bin/chromium
set -euo pipefail
ui="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$ui/.." && pwd)"

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    echo "e2e: installing chromium (Debian package)" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
fi

cd "$ui"
npm ci --no-audit --no-fund
npm run build

if [ -z "${AUXOT_BIN:-}" ]; then
    (cd "$repo" && cargo build)
fi

npm run e2e
