#!/usr/bin/env bash
# Fails when the committed assets/ differs from a fresh build of ui/ (the build is
# reproducible: same lockfile, same output, byte for byte).
set -euo pipefail
ui="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$ui/.." && pwd)"

cd "$ui"
npm ci --no-audit --no-fund
npm run build

cd "$repo"
changes="$(git status --porcelain -- assets/)"
if [ -n "$changes" ]; then
    echo "assets/ differs from a fresh build of ui/:" >&2
    echo "$changes" >&2
    echo "Run 'npm ci && npm run build' in ui/ and commit assets/." >&2
    exit 1
fi
echo "assets/ matches a fresh build of ui/"
