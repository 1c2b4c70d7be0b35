#!/usr/bin/env bash
# Regenerate the committed latency baseline after an intended latency change (then commit it):
#   scripts/refresh_baselines.sh
# which is: hybridexport bench --suite benchmarks/suite.toml --json benchmarks/baselines/suite.json.gz --out <fresh dir>
# The host rows are measured on this machine; CI compares them only when its machine matches
# (otherwise they are informational), so refresh on the machine type that runs CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SUITE=${LATENCY_SUITE:-benchmarks/suite.toml}
BASELINE=${LATENCY_BASELINE:-benchmarks/baselines/suite.json.gz}
ARTIFACTS=$(mktemp -d)   # fresh conversions, as in CI
trap 'rm -rf "$ARTIFACTS"' EXIT
set +e
"$PY" -m hybridexport bench --suite "$SUITE" --json "$BASELINE" --out "$ARTIFACTS" --jobs "${LATENCY_JOBS:-2}"
rc=$?
set -e
if [ "$rc" -eq 1 ]; then
    echo "refresh_baselines: some items failed; their reasons are recorded in $BASELINE" >&2
elif [ "$rc" -ne 0 ]; then
    exit "$rc"
fi
echo "wrote $BASELINE"
