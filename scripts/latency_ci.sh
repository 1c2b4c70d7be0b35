#!/usr/bin/env bash
# This project's own latency CI (called by .ci/run after the tests, with .venv).
#
# 1. Runs benchmarks/suite.toml: the three small models on the host (measured, onnxruntime) and on
#    the predicted phone profiles (deterministic).
# 2. Compares with the committed baseline benchmarks/baselines/suite.json.gz and writes the reports
#    into results/: latency.md (job summary / PR comment), latency.html, latency.xml (JUnit),
#    latency.json, node_data/ (Model Explorer overlays), plus the raw suite.json.
# 3. Fails (exit 1) on a predicted regression beyond LATENCY_THRESHOLD (default 5%), or when a
#    model × device that the baseline has can no longer be benchmarked. Host (measured) changes are
#    reported, but fail only when beyond LATENCY_HOST_THRESHOLD (default 25%) AND statistically
#    clear (99% bootstrap interval of the p20 ratio wholly above 1): CI machines are shared and noisy.
#    A host timing taken on a busy machine (1-min load ≥ cores + 1) or on other hardware than the
#    baseline's is informational only (reported, never fails), and so is a host timing of the very
#    artifact the baseline timed (same sha256, same runtime settings): only the machine changed.
#
# Environment: PYTHON (default .venv/bin/python), LATENCY_OUT (default results),
# LATENCY_BASELINE, LATENCY_SUITE, LATENCY_THRESHOLD, LATENCY_HOST_THRESHOLD, LATENCY_JOBS (default 2:
# conversions and predictions in 2 processes; the host timings still run alone afterwards).
# Refresh the baseline after an intended change: scripts/refresh_baselines.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
OUT=${LATENCY_OUT:-results}
SUITE=${LATENCY_SUITE:-benchmarks/suite.toml}
BASELINE=${LATENCY_BASELINE:-benchmarks/baselines/suite.json.gz}
THRESHOLD=${LATENCY_THRESHOLD:-5%}
HOST_THRESHOLD=${LATENCY_HOST_THRESHOLD:-25%}

if [ ! -f "$BASELINE" ]; then
    echo "latency CI: no baseline at $BASELINE; create it with scripts/refresh_baselines.sh" >&2
    exit 2
fi
mkdir -p "$OUT"
# artifacts are converted afresh: reusing old ones would hide a regression in the export or rewrite code
ARTIFACTS="$OUT/artifacts"
rm -rf "$ARTIFACTS"
start=$(date +%s)

echo "latency CI: running $SUITE"
set +e
"$PY" -m hybridexport bench --suite "$SUITE" --json "$OUT/suite.json" --out "$ARTIFACTS" --jobs "${LATENCY_JOBS:-2}"
bench_rc=$?
set -e
if [ "$bench_rc" -ne 0 ] && [ "$bench_rc" -ne 1 ]; then
    echo "latency CI: the suite could not run (exit $bench_rc)" >&2
    exit "$bench_rc"
fi
# exit 1 = some items failed; they are in $OUT/suite.json and compare reports (and gates) them

set +e
"$PY" -m hybridexport compare "$BASELINE" "$OUT/suite.json" \
    --threshold "$THRESHOLD" --measured-threshold "$HOST_THRESHOLD" --fail-on-missing \
    --out "$OUT/latency.md" --out "$OUT/latency.html" --out "$OUT/latency.xml" --out "$OUT/latency.json" \
    --out "$OUT/node_data/"
rc=$?
set -e

if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    cat "$OUT/latency.md" >> "$GITHUB_STEP_SUMMARY"
fi
echo "latency CI: reports in $OUT/ ($(( $(date +%s) - start )) s), exit $rc"
exit "$rc"
