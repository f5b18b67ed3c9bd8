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

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
