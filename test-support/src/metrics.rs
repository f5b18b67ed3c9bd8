//! Reading the controller's HTTP endpoints: health, readiness and Prometheus metrics (text or
//! OpenMetrics format), parsed with an independent parser rather than the controller's own.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over plain HTTP/1.0 (the server closes the connection after the body).
async fn fetch(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {answer}")))?;
    let code = head
        .lines()
        .next()
        .and_then(|status| status.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status code in: {head}")))?;
    Ok((code, body.to_string()))
}

/// The status code and body of `GET path`; panics when the server cannot be reached.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    fetch(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The body of `GET path` if the answer is 200; None while the server is unreachable or not
/// ready (for polling a server that is starting).
pub async fn get_ok(addr: SocketAddr, path: &str) -> Option<String> {
    match fetch(addr, path).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// The samples of a metrics page.
pub fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    // prometheus-parse reads the text format; OpenMetrics adds `# EOF` and `_total` suffixes that
    // it accepts as plain samples.
    let lines = text
        .lines()
        .filter(|l| *l != "# EOF")
        .map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("not a metrics page: {e}\n{text}"))
        .samples
}

/// The value of the first sample of `metric` that has all of `labels`.
pub fn value_of(
    samples: &[prometheus_parse::Sample],
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The value of `metric` with `labels` on `GET /metrics`; None while the server is unreachable
/// or does not export it yet.
pub async fn scrape(addr: SocketAddr, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let body = get_ok(addr, "/metrics").await?;
    value_of(&samples(&body), metric, labels)
}
