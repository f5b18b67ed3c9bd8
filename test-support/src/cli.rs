//! Runners for the programs a user types: the `sluice` binary and kubectl.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `sluice` binary at `binary` with `KUBECONFIG` set. A test passes
/// `env!("CARGO_BIN_EXE_sluice")`, which only the root package's tests know. `NO_COLOR` is
/// removed so that colour follows the terminal alone (standard output here is a pipe: none).
pub async fn sluice(binary: &str, kubeconfig: &Path, args: &[&str]) -> std::io::Result<Output> {
    tokio::process::Command::new(binary)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("NO_COLOR")
        .output()
        .await
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs kubectl (installed when missing) against `kubeconfig`; panics unless it succeeds, with
/// what it printed. Returns its standard output.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(crate::tools::kubectl())
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("kubectl {args:?} could not be run: {e}"));
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}
