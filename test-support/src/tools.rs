//! Programs the tests run. A missing one is installed from its Debian package by the e2e
//! crate's installer (one apt-get at a time across test processes, waiting for dpkg's lock);
//! a test that needs a tool fails loudly when it cannot have it, and never skips.
//! `e2e/run-tests.sh` installs the same packages up front, so that a full run does not start
//! several installs at once.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The path of `binary`, installing the Debian `package` that ships it when it is missing.
pub use sluice_e2e::prometheus::ensure_tool;

/// [`ensure_tool`] for tests that do not return a `Result`: panics when the tool cannot be had.
pub fn require_tool(binary: &str, package: &str) -> PathBuf {
    ensure_tool(binary, package).unwrap_or_else(|e| {
        panic!("{binary} is needed (Debian package {package}) and could not be installed: {e}")
    })
}

/// `kubectl` (Debian package `kubernetes-client`).
pub fn kubectl() -> PathBuf {
    require_tool("kubectl", "kubernetes-client")
}

/// What went wrong with a tmux session.
#[derive(Debug, thiserror::Error)]
pub enum TmuxError {
    #[error("tmux could not be run ({0}); install it: apt-get install -y tmux")]
    Run(std::io::Error),
    #[error("tmux {args:?}: {stderr}")]
    Failed { args: Vec<String>, stderr: String },
    #[error("pane never showed {wanted:?}; last:\n{pane}")]
    NeverShown { wanted: Vec<String>, pane: String },
}

/// A tmux server of its own (its own socket), to see the CLI in a terminal as a person does;
/// killed when dropped. tmux is installed first when missing.
pub struct Tmux {
    socket: String,
    /// How long [`Tmux::wait_for`] waits: generous, for a loaded machine.
    patience: Duration,
}

impl Tmux {
    pub fn new(
        socket: impl Into<String>,
        patience: Duration,
    ) -> Result<Tmux, Box<dyn std::error::Error>> {
        ensure_tool("tmux", "tmux")?;
        Ok(Tmux {
            socket: socket.into(),
            patience,
        })
    }

    /// Runs a tmux command on this server; returns its standard output.
    pub fn cmd(&self, args: &[&str]) -> Result<String, TmuxError> {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(TmuxError::Run)?;
        if !out.status.success() {
            return Err(TmuxError::Failed {
                args: args.iter().map(|a| a.to_string()).collect(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pane of `session`: with `escapes`, the screen with its colour codes; otherwise the
    /// whole history too, so that a frame that scrolled away would be seen.
    pub fn capture(&self, session: &str, escapes: bool) -> Result<String, TmuxError> {
        if escapes {
            self.cmd(&["capture-pane", "-p", "-e", "-t", session])
        } else {
            self.cmd(&["capture-pane", "-p", "-S", "-", "-t", session])
        }
    }

    /// Waits until the pane of `session` shows every string; returns the pane.
    pub async fn wait_for(&self, session: &str, wanted: &[&str]) -> Result<String, TmuxError> {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            let pane = self.capture(session, false)?;
            if wanted.iter().all(|w| pane.contains(w)) {
                return Ok(pane);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(TmuxError::NeverShown {
                    wanted: wanted.iter().map(|w| w.to_string()).collect(),
                    pane,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}
