#!/usr/bin/env bash
# Fails when a manual test's debris is tracked: databases, logs, cookie jars, data dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
debris=$(git ls-files | grep -E '(\.redb$|\.log$|(^|/)jar$|cookies?\.txt$|\.cookies$|(^|/)auxot-data/|(^|/)secret\.key$)' || true)
if [ -n "$debris" ]; then
    echo "tracked debris of a manual test (remove it; .gitignore covers it):" >&2
    echo "$debris" >&2
    exit 1
fi
echo "no tracked debris"
