//! A ready-made [`PodRunner`]: one real OS process per ready pod, on its own loopback port.

use std::time::Duration;

use crate::sim::{BoxFuture, PodInfo, PodProcess, PodRunner};

/// Starts `program args...` for every pod, with the environment a pod's app would see here:
/// `PORT` (a free loopback port the process must listen on), `POD_NAME`, `POD_NAMESPACE`,
/// `POD_UID`, `POD_IMAGE` (the first container's image, so one program can play every version)
/// and `POD_LABEL_<KEY>` per label (key upper-cased, non-alphanumerics as `_`). Any `{port}`,
/// `{pod}` or `{image}` in `args` is replaced too. The pod becomes Ready once the port accepts
/// connections; the process is killed when the pod terminates. If the process exits on its own
/// the pod turns unready and crash-loops until a restart succeeds.
#[derive(Debug, Clone)]
pub struct ProcessRunner {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    startup_timeout: Duration,
}

impl ProcessRunner {
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            startup_timeout: Duration::from_secs(30),
        }
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How long the process may take to accept connections before the start counts as failed.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }
}

fn env_key(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A free loopback port (bound and released; the child binds it right after).
fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Hands the child to a task that reports its exit and kills it when the pod goes (the guard,
/// a sender, is dropped).
fn supervise(mut child: tokio::process::Child, port: u16) -> PodProcess {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                let reason = match status {
                    Ok(s) => format!("exited: {s}"),
                    Err(e) => format!("wait failed: {e}"),
                };
                let _ = exit_tx.send(reason);
            }
            _ = stopped => {
                let _ = child.kill().await;
            }
        }
    });
    PodProcess::new(Some(port), stop).with_exit(exit_rx)
}

impl PodRunner for ProcessRunner {
    fn start(&self, pod: PodInfo) -> BoxFuture<Result<PodProcess, String>> {
        let runner = self.clone();
        Box::pin(async move {
            let port = free_port()?;
            let image = pod
                .pod
                .pointer("/spec/containers/0/image")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            let fill = |s: &str| {
                s.replace("{port}", &port.to_string())
                    .replace("{pod}", &pod.name)
                    .replace("{image}", &image)
            };
            let mut cmd = tokio::process::Command::new(&runner.program);
            cmd.args(runner.args.iter().map(|a| fill(a)))
                .env("PORT", port.to_string())
                .env("POD_NAME", &pod.name)
                .env("POD_NAMESPACE", &pod.namespace)
                .env("POD_UID", &pod.uid)
                .env("POD_IMAGE", &image)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            for (k, v) in &pod.labels {
                cmd.env(format!("POD_LABEL_{}", env_key(k)), v);
            }
            for (k, v) in &runner.env {
                cmd.env(k, fill(v));
            }
            let mut child = cmd.spawn().map_err(|e| {
                format!(
                    "failed to start {} for pod {}: {e}",
                    runner.program, pod.name
                )
            })?;
            let deadline = tokio::time::Instant::now() + runner.startup_timeout;
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Ok(supervise(child, port));
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "process of pod {} exited before listening: {status}",
                        pod.name
                    ));
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!(
                        "process of pod {} did not listen on port {port} in time",
                        pod.name
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }
}
