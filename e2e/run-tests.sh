#!/usr/bin/env bash
# The whole test suite, as CI runs it on a clean clone. Installs what the tests need first (the
# tests also install what they miss, but doing it once here avoids parallel apt-get runs).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need prometheus prometheus      # real Prometheus for analysis tests (and promtool)
need nginx nginx                # the closed-loop data plane
need lua5.4 lua5.4              # Argo CD health check tests
need tmux tmux                  # `sluice get --watch` seen as a person sees it
need python3 python3            # Helm SDK driver, pod processes
need kubectl kubernetes-client  # kubectl against the test cluster
need git git                    # the GitOps closed loop commits to a local repository
need chromium chromium          # the dashboard's browser tests (headless)
need chromedriver chromium-driver  # ... driven through WebDriver
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} (apt-get)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Real Helm, through the Python package that bundles Helm's Go library.
if ! python3 -c 'import helm_python' >/dev/null 2>&1; then
    python3 -m pip install --quiet helm-python-sdk \
        || python3 -m pip install --quiet --user --break-system-packages helm-python-sdk
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The container image's build: without the live demo, so the controller links no test cluster.
cargo clippy --workspace --no-default-features -- -D warnings
# Every test binary of `cargo test --workspace`, two at a time (see the script), then the doc tests.
python3 e2e/run-test-binaries.py
cargo test --workspace --doc
