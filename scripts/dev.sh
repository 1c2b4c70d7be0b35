#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv in the repo root (idempotent) and runs a job.
#   bash scripts/dev.sh setup   # only create/refresh .venv
#   bash scripts/dev.sh demo    # setup + the main job (convert iformer to Core ML, bench on iphone13)
#   bash scripts/dev.sh test    # setup + ruff + the test suite
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV with $PY"
        "$PY" -m venv "$VENV"
    fi
    local want have=""
    want=$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -d' ' -f1)
    [ -f "$VENV/.installed" ] && have=$(cat "$VENV/.installed")
    if [ "$want" != "$have" ]; then
        echo "==> installing pinned dependencies into .venv"
        # torch first and pinned: it takes the local CPU wheel; anything looser pulls a CUDA build.
        "$VENV/bin/pip" install -q torch==2.13.0
        "$VENV/bin/pip" install -q -e ".[test]"
        # qai-hub (the qai-hub runner) pins protobuf<=6.31.1, which would move onnx's protobuf: installed
        # without its resolver, with its own dependencies pinned (see pyproject.toml)
        "$VENV/bin/pip" install -q --no-deps qai-hub==0.56.0 backoff==2.2.1 deprecation==2.1.0 h5py==3.16.0 \
            prettytable==3.18.0 wcwidth==0.9.4 requests-toolbelt==1.0.0 s3transfer==0.13.1 botocore==1.44.8 \
            jmespath==1.1.0 semver==3.1.2
        echo "$want" > "$VENV/.installed"
    else
        echo "==> .venv is up to date"
    fi
}

ensure_chromium() {
    # The HTML report test renders the page in a real headless browser (Debian's chromium).
    if ! command -v chromium >/dev/null 2>&1; then
        echo "==> installing chromium (Debian package) for the HTML report test"
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    fi
}

case "${1:-}" in
    setup)
        setup
        ;;
    demo)
        setup
        shift
        MODEL=${1:-iformer}
        DEVICE=${2:-iphone13}
        # The mission's headline: rewrite + export + verify, then per-layer latency on a phone
        # (predicted by the calibrated latency model when no phone is attached).
        "$VENV/bin/hybridexport" convert "$MODEL" --to coreml
        "$VENV/bin/hybridexport" bench --device "$DEVICE"
        ;;
    test)
        setup
        ensure_chromium
        shift
        "$VENV/bin/ruff" check hybridexport tests benchmarks scripts
        set +e
        # two workers (this machine's two cores), one test file per worker at a time so a file's
        # module-scoped conversions are made once
        "$VENV/bin/python" -m pytest -q -n 2 --dist loadfile "$@"
        rc=$?
        set -e
        # pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
        exit $rc
        ;;
    *)
        echo "usage: bash scripts/dev.sh setup|demo [MODEL [DEVICE]]|test [pytest args]" >&2
        exit 2
        ;;
esac
