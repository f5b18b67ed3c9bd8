//! The web metric provider: one HTTP request per measurement, its answer the value, as in Argo
//! Rollouts: a JSON body goes through the metric's `jsonPath` (the first match is `result`), any
//! other body is `result` as text.
//!
//! Every failure is an error *value* for the measurement, with a message: URL not on the
//! allowlist (nothing is sent), connection refused, timeout, a redirect (never followed), a
//! non-2xx status with a bounded excerpt of the body, a body over the size limit, a `jsonPath`
//! that finds nothing. Secret values are redacted from every message, including what the server
//! echoes back.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use crate::analysis::run::{ProviderResult, WebRequest};
use crate::analysis::value::MetricValue;
use crate::metrics::prometheus::{
    AddressAllowlist, PrometheusConfigError, client_builder, excerpt,
};

/// Largest answer read from a web metric's server. A metric's value is small; anything larger is
/// not what the metric meant to read.
pub const MAX_WEB_BODY_BYTES: usize = 1024 * 1024;

/// Calls web metric URLs. Cheap to share: one connection pool for verified TLS and one for
/// `insecure` metrics.
#[derive(Debug, Clone)]
pub struct WebProvider {
    allowlist: AddressAllowlist,
    client: reqwest::Client,
    insecure_client: reqwest::Client,
}

impl WebProvider {
    /// Builds the provider with the controller's allowlist of metric provider addresses (the
    /// same one the Prometheus provider uses).
    pub fn new(allowlist: AddressAllowlist) -> Result<Self, PrometheusConfigError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race against another installer is fine: one provider is in place.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Ok(WebProvider {
            allowlist,
            client: client_builder(false).build()?,
            insecure_client: client_builder(true).build()?,
        })
    }

    /// Takes one measurement. Never fails: problems become an error value with a message.
    pub async fn measure(&self, req: &WebRequest) -> ProviderResult {
        let value = self.call(req).await.map_err(|e| redact(&e, &req.secrets));
        ProviderResult::measured(value, BTreeMap::new())
    }

    async fn call(&self, req: &WebRequest) -> Result<MetricValue, String> {
        let shown = &req.display_url;
        let url = Url::parse(&req.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| format!("web metric URL {shown:?} is not an http(s) URL"))?;
        if !self.allowlist.allows(&url) {
            return Err(format!(
                "web metric URL {shown:?} is not in the controller's allowlist of metric provider \
                 addresses (allowed: {})",
                self.allowlist.describe()
            ));
        }
        let method = match req.method.as_str() {
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            _ => reqwest::Method::GET,
        };
        let client = if req.insecure {
            &self.insecure_client
        } else {
            &self.client
        };
        let mut builder = client.request(method, url).timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(body) = &req.body {
            if req.json_body {
                builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            builder = builder.body(body.clone());
        }
        tracing::debug!(url = %shown, method = %req.method, "calling web metric");
        let mut response = builder
            .send()
            .await
            .map_err(|e| transport_error(&e, shown, req.timeout))?;
        let status = response.status();
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or("?");
            return Err(format!(
                "web metric at {shown} answered HTTP {} redirecting to {to:?}; redirects are not \
                 followed (they could lead past the allowlist): use the final URL",
                status.as_u16()
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(&e, shown, req.timeout))?
        {
            if body.len() + chunk.len() > MAX_WEB_BODY_BYTES {
                return Err(format!(
                    "web metric at {shown} answered more than {} KiB; a metric's answer must be \
                     smaller",
                    MAX_WEB_BODY_BYTES / 1024
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(format!(
                "web metric at {shown} answered HTTP {} (not 2xx): {}",
                status.as_u16(),
                excerpt(&body)
            ));
        }
        value_of(&body, req)
    }
}

/// The value of a 2xx answer: a JSON document through the metric's JSONPath, anything else as
/// text (Argo Rollouts' rule, so `result == "I am OK"` works on a plain-text endpoint).
fn value_of(body: &[u8], req: &WebRequest) -> Result<MetricValue, String> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(MetricValue::String(
            String::from_utf8_lossy(body).into_owned(),
        ));
    };
    let value = req.json_path.first(&doc).map_err(|e| {
        format!(
            "web metric at {}: could not find jsonPath {} in the answer: {e}",
            req.display_url, req.json_path
        )
    })?;
    Ok(MetricValue::from_json(value))
}

fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "*****");
    }
    out
}

/// A transport failure in words: timeout, connection refused (with the OS reason), or whatever
/// the innermost error says.
fn transport_error(e: &reqwest::Error, url: &str, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "web metric at {url} did not answer within {}s (timeoutSeconds)",
            timeout.as_secs_f64()
        );
    }
    let mut root = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        format!("cannot connect to web metric at {url}: {root}")
    } else {
        format!("request to web metric at {url} failed: {root}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::jsonpath::JsonPath;

    fn request(path: &str) -> WebRequest {
        WebRequest {
            method: "GET".into(),
            url: "http://x".into(),
            display_url: "http://x".into(),
            headers: Vec::new(),
            body: None,
            json_body: false,
            timeout: Duration::from_secs(1),
            json_path: JsonPath::parse(path).unwrap(),
            insecure: false,
            secrets: Vec::new(),
        }
    }

    #[test]
    fn json_answers_go_through_the_json_path_and_text_stays_text() {
        let r = request("{$.data.ok}");
        assert_eq!(
            value_of(br#"{"data":{"ok":true}}"#, &r),
            Ok(MetricValue::Json(serde_json::json!(true)))
        );
        assert_eq!(
            value_of(br#"{"data":{"ok":0.5}}"#, &r),
            Ok(MetricValue::Number(0.5))
        );
        assert_eq!(
            value_of(b"I am OK", &r),
            Ok(MetricValue::String("I am OK".into()))
        );
        let missing = value_of(br#"{"data":{}}"#, &r).unwrap_err();
        assert!(missing.contains("ok is not found"), "{missing}");
    }

    #[test]
    fn secrets_are_redacted_from_messages() {
        assert_eq!(
            redact("token s3cret echoed", &["s3cret".into()]),
            "token ***** echoed"
        );
    }
}
