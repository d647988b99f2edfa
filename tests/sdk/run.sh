#!/usr/bin/env bash
# Drives the real auxot binary with the official `openai` and `anthropic` Python SDKs.
# Usage: bash tests/sdk/run.sh [extra pytest args]
# Binary: ${AUXOT_BIN:-target/debug/auxot}, relative to the repo root; built once if missing.
set -euo pipefail

cd "$(dirname "$0")/../.."
repo_root="$(pwd)"

venv="tests/sdk/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt

bin="${AUXOT_BIN:-target/debug/auxot}"
if [[ ! -x "$bin" ]]; then
    echo "run.sh: $bin not found; running cargo build" >&2
    cargo build
fi
if [[ ! -x "$bin" ]]; then
    echo "run.sh: $bin still missing after cargo build" >&2
    exit 1
fi
case "$bin" in
    /*) AUXOT_BIN="$bin" ;;
    *) AUXOT_BIN="$repo_root/$bin" ;;
esac
export AUXOT_BIN

# Everything is on 127.0.0.1: keep any configured proxy out of the way.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk "$@"
