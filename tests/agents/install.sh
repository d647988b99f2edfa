#!/usr/bin/env bash
# Installs the pinned Claude Code and Codex CLIs (tests/agents/package.json) into
# tests/agents/node_modules for the integration tests in tests/coding_agents.rs.
# Needs node + npm; reaches only the npm registry.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
    echo "install.sh: npm is required to install the agent CLIs" >&2
    exit 1
fi
npm install --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null
./node_modules/.bin/claude --version
./node_modules/.bin/codex --version
