//! Reading an HTTP answer from a server Sluice does not control (a metric endpoint, a
//! notification receiver) without ever buffering more than a bound: a hostile or broken server
//! can stream gigabytes within any timeout.

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BodyError {
    /// More than the bound arrived; reading stopped there.
    TooLarge { limit: usize },
    /// The connection failed while reading (including the request's timeout).
    Transport(reqwest::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => {
                write!(f, "the answer is larger than {} KiB", limit / 1024)
            }
            BodyError::Transport(e) => write!(f, "{}", e),
        }
    }
}

/// The body of `response`, or an error as soon as more than `limit` bytes have arrived.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(url: &str) -> reqwest::Response {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::get(url).await.unwrap()
    }

    /// A server that answers 200 with a chunked body that never ends (until the client hangs
    /// up), or with `body` when given.
    async fn server(body: Option<&'static [u8]>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            match body {
                Some(b) => {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", b.len());
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(b).await;
                }
                None => {
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                        .await;
                    let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
                    while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                }
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn an_endless_answer_stops_at_the_limit() {
        let url = server(None).await;
        let response = get(&url).await;
        match read_limited(response, 64 * 1024).await {
            Err(BodyError::TooLarge { limit }) => assert_eq!(limit, 64 * 1024),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_answer_within_the_limit_is_read_whole() {
        let url = server(Some(b"{\"ok\": true}")).await;
        let response = get(&url).await;
        let body = read_limited(response, 64 * 1024).await.unwrap();
        assert_eq!(body, b"{\"ok\": true}");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        static BIG: [u8; 2048] = [b'x'; 2048];
        let url = server(Some(&BIG)).await;
        let response = get(&url).await;
        let err = read_limited(response, 1024).await.unwrap_err();
        assert_eq!(err.to_string(), "the answer is larger than 1 KiB");
    }
}
