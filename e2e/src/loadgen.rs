//! A load generator: a steady request rate to one address and `Host`, recording every answer's
//! version (`x-version`), status and latency.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// One answered (or failed) request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the request was sent.
    pub sent: Instant,
    /// When the answer arrived.
    pub done: Instant,
    /// HTTP status; 0 when the connection failed.
    pub status: u16,
    /// The `x-version` header, empty when missing.
    pub version: String,
}

impl Sample {
    /// A 5xx or a failed connection.
    pub fn failed(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

/// Counts over a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Split {
    pub total: usize,
    /// Answers from the given version.
    pub version: usize,
    /// Failed answers from the given version.
    pub version_failed: usize,
}

impl Split {
    /// Share of the given version in percent.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.version as f64 / self.total as f64
        }
    }
}

/// Sends `rate` requests per second until dropped.
pub struct LoadGenerator {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: JoinHandle<()>,
}

/// One `GET /` with `Host: host` and extra headers: (status, `x-version`); status 0 when the
/// connection failed.
pub async fn get(addr: SocketAddr, host: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    request(addr, host, &headers).await
}

/// One HTTP/1.1 request on a fresh connection (nginx reloads close idle keep-alive connections,
/// which would show up as spurious failures).
async fn request(addr: SocketAddr, host: &str, headers: &[(String, String)]) -> (u16, String) {
    let go = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let Ok(Ok(buf)) = tokio::time::timeout(Duration::from_secs(10), go).await else {
        return (0, String::new());
    };
    let text = String::from_utf8_lossy(&buf);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let version = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("x-version"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, version)
}

impl LoadGenerator {
    /// Starts sending `rate` requests/s to `addr` with `Host: host`.
    pub fn start(addr: SocketAddr, host: &str, rate: u32) -> LoadGenerator {
        Self::with_headers(addr, host, rate, Vec::new())
    }

    /// Same, with extra request headers.
    pub fn with_headers(
        addr: SocketAddr,
        host: &str,
        rate: u32,
        headers: Vec<(String, String)>,
    ) -> LoadGenerator {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let host = host.to_string();
        let headers = Arc::new(headers);
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tick.tick().await;
                let out = out.clone();
                let host = host.clone();
                let headers = headers.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let (status, version) = request(addr, &host, &headers).await;
                    let sample = Sample {
                        sent,
                        done: Instant::now(),
                        status,
                        version,
                    };
                    if let Ok(mut s) = out.lock() {
                        s.push(sample);
                    }
                });
            }
        });
        LoadGenerator { samples, task }
    }

    /// Every sample so far, in completion order.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Samples sent in `[from, to)`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<Sample> {
        self.samples()
            .into_iter()
            .filter(|s| s.sent >= from && s.sent < to)
            .collect()
    }

    /// Counts of `version` among samples sent in `[from, to)`.
    pub fn split(&self, version: &str, from: Instant, to: Instant) -> Split {
        split_of(&self.between(from, to), version)
    }

    /// Stops sending.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Counts of `version` in `samples`.
pub fn split_of(samples: &[Sample], version: &str) -> Split {
    let mut split = Split::default();
    for s in samples {
        split.total += 1;
        if s.version == version {
            split.version += 1;
            if s.failed() {
                split.version_failed += 1;
            }
        }
    }
    split
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
