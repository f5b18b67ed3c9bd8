#!/usr/bin/env bash
# The whole test suite, as CI runs it on a clean clone. Installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real parts: the analysis tests run a real Prometheus server (Debian package).
if ! command -v prometheus >/dev/null 2>&1; then
    echo "installing prometheus (apt-get)" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi

# The test cluster's tests drive the real kubectl, and back pods with python3 processes.
for tool in kubectl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "installing $tool (apt-get)" >&2
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$tool" >/dev/null
    fi
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
