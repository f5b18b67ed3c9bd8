//! The Prometheus metric provider: runs a resolved query against Prometheus's HTTP API and turns
//! the answer into a [`MetricValue`], as Argo Rollouts does (scalar ⇒ number, vector ⇒ list,
//! matrix ⇒ every sample of every series in one list).
//!
//! Every failure is an error *value* for the measurement, with a message saying what happened:
//! address not allowed, connection refused, timeout, HTTP error with Prometheus's `errorType` and
//! `error`, unparseable body, unsupported result type.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::analysis::condition::parse_go_float;
use crate::analysis::run::{PrometheusRequest, ProviderResult};
use crate::analysis::value::MetricValue;

/// Metadata key of the warnings Prometheus sent with its answer.
pub const WARNINGS_KEY: &str = "warnings";
/// Largest response body read from a server.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Longest part of an unexpected response body quoted in a message.
const BODY_EXCERPT: usize = 300;

/// Why the provider could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusConfigError {
    /// An allowlist entry is not a usable URL.
    #[error("metric provider allowlist entry {entry:?} is invalid: {reason}")]
    InvalidAllowlistEntry {
        /// The entry as given.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// The default address is not a usable URL.
    #[error("default Prometheus address {address:?} is invalid: {reason}")]
    InvalidDefaultAddress {
        /// The address as given.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for Prometheus: {0}")]
    Client(#[from] reqwest::Error),
}

/// The metric provider addresses the controller may call. Whoever can write an AnalysisTemplate
/// chooses the address; the allowlist keeps them from making the controller call arbitrary URLs.
///
/// An entry is a URL prefix: scheme, host and port must be equal, and the request's path must
/// start with the entry's path (`https://mimir.example/prometheus` allows
/// `https://mimir.example/prometheus/...` but not `https://mimir.example/admin`). An empty
/// allowlist allows nothing.
#[derive(Debug, Clone, Default)]
pub struct AddressAllowlist {
    entries: Vec<Url>,
    allow_any: bool,
}

impl AddressAllowlist {
    /// An allowlist of URL prefixes.
    pub fn new<I, S>(entries: I) -> Result<Self, PrometheusConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for e in entries {
            let e = e.as_ref();
            let url = parse_http_url(e).map_err(|reason| {
                PrometheusConfigError::InvalidAllowlistEntry {
                    entry: e.to_string(),
                    reason,
                }
            })?;
            parsed.push(url);
        }
        Ok(AddressAllowlist {
            entries: parsed,
            allow_any: false,
        })
    }

    /// Allows every address. For development clusters only.
    pub fn allow_any() -> Self {
        AddressAllowlist {
            entries: Vec::new(),
            allow_any: true,
        }
    }

    /// True when `url` is allowed.
    pub fn allows(&self, url: &Url) -> bool {
        self.allow_any
            || self.entries.iter().any(|e| {
                e.scheme() == url.scheme()
                    && e.host_str() == url.host_str()
                    && e.port_or_known_default() == url.port_or_known_default()
                    && path_has_prefix(url.path(), e.path())
            })
    }

    /// The entries, for messages.
    pub fn describe(&self) -> String {
        if self.entries.is_empty() {
            "none configured".to_string()
        } else {
            self.entries
                .iter()
                .map(|u| u.as_str().trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

pub(crate) fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it has no host".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("it must not have a query or fragment".to_string());
    }
    Ok(url)
}

/// Controller-wide settings of the Prometheus provider.
#[derive(Debug, Clone, Default)]
pub struct PrometheusConfig {
    /// Addresses metrics may query.
    pub allowlist: AddressAllowlist,
    /// Address used when a metric sets none.
    pub default_address: Option<String>,
}

/// Queries Prometheus. Cheap to share: one connection pool for verified TLS and one for
/// `insecure` metrics.
#[derive(Debug, Clone)]
pub struct PrometheusProvider {
    config: PrometheusConfig,
    client: reqwest::Client,
    insecure_client: reqwest::Client,
}

fn build_client(insecure: bool) -> Result<reqwest::Client, reqwest::Error> {
    client_builder(insecure).build()
}

pub(crate) fn client_builder(insecure: bool) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        // A redirect could lead anywhere, past the allowlist.
        .redirect(reqwest::redirect::Policy::none())
        // Measurements are seconds to minutes apart: a pooled connection saves nothing and, when
        // the server restarted in between, turns its "connection refused" into a misleading
        // "connection closed before message completed".
        .pool_max_idle_per_host(0)
        .danger_accept_invalid_certs(insecure)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
}

impl PrometheusProvider {
    /// Builds the provider. The process uses ring as its one TLS crypto provider (as kube does);
    /// it is installed here if nobody did it before.
    pub fn new(config: PrometheusConfig) -> Result<Self, PrometheusConfigError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race against another installer is fine: one provider is in place.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if let Some(a) = &config.default_address {
            parse_http_url(a).map_err(|reason| PrometheusConfigError::InvalidDefaultAddress {
                address: a.clone(),
                reason,
            })?;
        }
        Ok(PrometheusProvider {
            config,
            client: build_client(false)?,
            insecure_client: build_client(true)?,
        })
    }

    /// The provider's settings (the web provider shares its allowlist).
    pub fn config(&self) -> &PrometheusConfig {
        &self.config
    }

    /// Runs one query. Never fails: problems become an error value with a message.
    pub async fn measure(&self, req: &PrometheusRequest) -> ProviderResult {
        let mut metadata = BTreeMap::new();
        let value = self.query(req, &mut metadata).await;
        ProviderResult::measured(value, metadata)
    }

    async fn query(
        &self,
        req: &PrometheusRequest,
        metadata: &mut BTreeMap<String, String>,
    ) -> Result<MetricValue, String> {
        let (data, address) = self.fetch(req, metadata).await?;
        to_metric_value(&data).map_err(|e| format!("prometheus at {address}: {e}"))
    }

    /// Runs an instant query and returns every series of the answer with its labels (a scalar
    /// is one series without labels). For providers that need to tell series apart.
    pub async fn query_series(
        &self,
        req: &PrometheusRequest,
        metadata: &mut BTreeMap<String, String>,
    ) -> Result<Vec<Series>, String> {
        let (data, address) = self.fetch(req, metadata).await?;
        to_series(&data).map_err(|e| format!("prometheus at {address}: {e}"))
    }

    async fn fetch(
        &self,
        req: &PrometheusRequest,
        metadata: &mut BTreeMap<String, String>,
    ) -> Result<(ApiData, String), String> {
        let address = req
            .address
            .as_deref()
            .or(self.config.default_address.as_deref())
            .ok_or_else(|| {
                "provider.prometheus.address is not set and the controller has no default \
                 Prometheus address"
                    .to_string()
            })?;
        let base = parse_http_url(address)
            .map_err(|e| format!("prometheus address {address:?} is not a valid URL: {e}"))?;
        if !self.config.allowlist.allows(&base) {
            return Err(format!(
                "prometheus address {address:?} is not in the controller's allowlist of metric \
                 provider addresses (allowed: {})",
                self.config.allowlist.describe()
            ));
        }
        let endpoint = if req.range.is_some() {
            "api/v1/query_range"
        } else {
            "api/v1/query"
        };
        let mut url = base.clone();
        url.set_path(&format!("{}/{endpoint}", base.path().trim_end_matches('/')));
        // A metric with its own CA gets its own client: the CA is part of the TLS configuration.
        let own_client;
        let client = if req.insecure {
            &self.insecure_client
        } else if let Some(pem) = &req.ca_cert {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                format!("provider.prometheus.caCert is not a valid PEM certificate bundle: {e}")
            })?;
            if certs.is_empty() {
                return Err("provider.prometheus.caCert holds no PEM certificate".to_string());
            }
            own_client = client_builder(false)
                .tls_certs_only(certs)
                .build()
                .map_err(|e| format!("cannot use provider.prometheus.caCert: {e}"))?;
            &own_client
        } else {
            &self.client
        };
        let mut params: Vec<(&str, String)> = vec![("query", req.query.clone())];
        if let Some(r) = &req.range {
            params.push(("start", seconds(r.start)));
            params.push(("end", seconds(r.end)));
            params.push(("step", format!("{}", r.step.as_secs_f64())));
        }
        // Prometheus stops evaluating at this deadline too, instead of working for nobody.
        params.push(("timeout", format!("{}s", req.timeout.as_secs().max(1))));
        let mut builder = client.get(url).query(&params).timeout(req.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some((user, password)) = &req.basic_auth {
            builder = builder.basic_auth(user, Some(password));
        }
        tracing::debug!(
            address,
            query = %req.display_query,
            range = req.range.is_some(),
            "querying prometheus"
        );
        let response = builder
            .send()
            .await
            .map_err(|e| transport_error(&e, address, req.timeout))?;
        let http_status = response.status();
        let mut response = response;
        // The address is chosen by whoever writes the template: never buffer without a bound.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(&e, address, req.timeout))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!(
                    "prometheus at {address} returned more than {} MiB; narrow the query",
                    MAX_BODY_BYTES / (1024 * 1024)
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let data = parse_api_data(http_status, &body, address, metadata)?;
        Ok((data, address.to_string()))
    }
}

/// Reads a Prometheus HTTP API response (pure; what `measure` does with the bytes it received,
/// already bounded by `MAX_BODY_BYTES`): the value, or a message naming `address`. Warnings go
/// into `metadata`.
pub fn parse_api_response(
    http_status: http::StatusCode,
    body: &[u8],
    address: &str,
    metadata: &mut BTreeMap<String, String>,
) -> Result<MetricValue, String> {
    let data = parse_api_data(http_status, body, address, metadata)?;
    to_metric_value(&data).map_err(|e| format!("prometheus at {address}: {e}"))
}

fn parse_api_data(
    http_status: http::StatusCode,
    body: &[u8],
    address: &str,
    metadata: &mut BTreeMap<String, String>,
) -> Result<ApiData, String> {
    let parsed: Result<ApiResponse, _> = serde_json::from_slice(body);
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) if http_status.is_success() => {
            // serde's message quotes what it could not read, escaped: a string of control
            // characters grows sixfold. It is cut like the body.
            return Err(format!(
                "prometheus at {address} returned a body that is not a Prometheus API \
                 response ({}): {}",
                excerpt(e.to_string().as_bytes()),
                excerpt(body)
            ));
        }
        Err(_) => {
            return Err(format!(
                "prometheus at {address} returned HTTP {}: {}",
                http_status.as_u16(),
                excerpt(body)
            ));
        }
    };
    if !parsed.warnings.is_empty() {
        metadata.insert(WARNINGS_KEY.to_string(), parsed.warnings.join("; "));
    }
    if parsed.status != "success" || !http_status.is_success() {
        let kind = parsed.error_type.unwrap_or_else(|| "unknown".to_string());
        // The server's own words, cut like a body: they can be as long as the response.
        let detail = parsed
            .error
            .filter(|e| !e.trim().is_empty())
            .map(|e| excerpt(e.as_bytes()))
            .unwrap_or_default();
        return Err(if kind == "bad_data" {
            format!(
                "prometheus at {address} rejected the query as invalid (HTTP {}, bad_data): {detail}",
                http_status.as_u16()
            )
        } else {
            format!(
                "prometheus at {address} returned an error (HTTP {}, {kind}): {detail}",
                http_status.as_u16()
            )
        });
    }
    parsed
        .data
        .ok_or_else(|| format!("prometheus at {address} returned success without data"))
}

fn seconds(t: jiff::Timestamp) -> String {
    let ms = t.as_millisecond();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    let mut out: String = text.chars().take(BODY_EXCERPT).collect();
    if text.chars().count() > BODY_EXCERPT {
        out.push_str("...");
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A transport failure in words: timeout, connection refused (with the OS reason), or whatever
/// the innermost error says.
fn transport_error(e: &reqwest::Error, address: &str, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!(
            "prometheus at {address} did not answer within {}s (timeout)",
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
        format!("cannot connect to prometheus at {address}: {root}")
    } else {
        let mut msg = format!("request to prometheus at {address} failed");
        let _ = write!(msg, ": {root}");
        msg
    }
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// `[<unix time>, "<value>"]`
#[derive(Deserialize)]
struct Sample(#[allow(dead_code)] serde_json::Value, String);

#[derive(Deserialize)]
struct VectorSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: Option<Sample>,
}

/// One series of an instant query's answer: its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The labels (`__name__` included when Prometheus kept it).
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Series {
    /// The labels as PromQL writes them: `{a="1", b="2"}`.
    pub fn describe(&self) -> String {
        let inner: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{{{}}}", inner.join(", "))
    }
}

fn to_series(data: &ApiData) -> Result<Vec<Series>, String> {
    let shape =
        |e: serde_json::Error| format!("{} result has an unexpected shape: {e}", data.result_type);
    match data.result_type.as_str() {
        "scalar" => {
            let s: Sample = serde_json::from_value(data.result.clone()).map_err(shape)?;
            Ok(vec![Series {
                labels: BTreeMap::new(),
                value: sample_value(&s)?,
            }])
        }
        "vector" => {
            let series: Vec<VectorSeries> =
                serde_json::from_value(data.result.clone()).map_err(shape)?;
            series
                .into_iter()
                .map(|s| {
                    let sample = s.value.as_ref().ok_or_else(|| {
                        "vector sample without a float value (native histograms are not supported)"
                            .to_string()
                    })?;
                    Ok(Series {
                        value: sample_value(sample)?,
                        labels: s.metric,
                    })
                })
                .collect()
        }
        other => Err(format!(
            "result type {other:?} is not supported here (expected an instant vector or a scalar)"
        )),
    }
}

#[derive(Deserialize)]
struct MatrixSeries {
    #[serde(default)]
    values: Vec<Sample>,
}

fn sample_value(s: &Sample) -> Result<f64, String> {
    parse_go_float(&s.1).ok_or_else(|| format!("sample value {:?} is not a number", s.1))
}

fn to_metric_value(data: &ApiData) -> Result<MetricValue, String> {
    let shape =
        |e: serde_json::Error| format!("{} result has an unexpected shape: {e}", data.result_type);
    match data.result_type.as_str() {
        "scalar" => {
            let s: Sample = serde_json::from_value(data.result.clone()).map_err(shape)?;
            Ok(MetricValue::Number(sample_value(&s)?))
        }
        "vector" => {
            let series: Vec<VectorSeries> =
                serde_json::from_value(data.result.clone()).map_err(shape)?;
            let mut out = Vec::with_capacity(series.len());
            for s in &series {
                let sample = s.value.as_ref().ok_or_else(|| {
                    "vector sample without a float value (native histograms are not supported)"
                        .to_string()
                })?;
                out.push(sample_value(sample)?);
            }
            Ok(MetricValue::Numbers(out))
        }
        "matrix" => {
            let series: Vec<MatrixSeries> =
                serde_json::from_value(data.result.clone()).map_err(shape)?;
            let mut out = Vec::new();
            for s in &series {
                for sample in &s.values {
                    out.push(sample_value(sample)?);
                }
            }
            Ok(MetricValue::Numbers(out))
        }
        other => Err(format!(
            "result type {other:?} is not supported (expected scalar, vector or matrix)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a 200 answer that is a JSON string of DEL characters. serde's message
    /// quotes the string escaped (`\u{7f}`, six bytes each), which made the error over 4 KiB
    /// for an 877-byte body.
    #[test]
    fn an_escaped_body_quoted_by_serde_keeps_the_error_short() {
        let body = format!("\"re{}}}\"", "\u{7f}".repeat(800));
        let mut metadata = BTreeMap::new();
        let err = parse_api_response(
            http::StatusCode::OK,
            body.as_bytes(),
            "http://prometheus.test:9090",
            &mut metadata,
        )
        .expect_err("not an API response");
        assert!(err.len() < 1024, "{} bytes: {err}", err.len());
        assert!(err.contains("not a Prometheus API response"), "{err}");
        // An error field as long as the response is cut the same way.
        let body = serde_json::json!({"status": "error", "errorType": "bad_data",
            "error": "x".repeat(100_000)})
        .to_string();
        let err = parse_api_response(
            http::StatusCode::BAD_REQUEST,
            body.as_bytes(),
            "http://prometheus.test:9090",
            &mut metadata,
        )
        .expect_err("an error");
        assert!(err.len() < 1024, "{} bytes", err.len());
        assert!(err.contains("bad_data"), "{err}");
    }

    fn data(json: serde_json::Value) -> ApiData {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn results_are_shaped_like_argo_rollouts() {
        let scalar = data(serde_json::json!({"resultType": "scalar", "result": [1.5, "NaN"]}));
        assert!(matches!(to_metric_value(&scalar), Ok(MetricValue::Number(n)) if n.is_nan()));
        let vector = data(serde_json::json!({"resultType": "vector", "result": [
            {"metric": {"a": "1"}, "value": [1.5, "0.98"]},
            {"metric": {"a": "2"}, "value": [1.5, "+Inf"]}
        ]}));
        assert_eq!(
            to_metric_value(&vector),
            Ok(MetricValue::Numbers(vec![0.98, f64::INFINITY]))
        );
        let matrix = data(serde_json::json!({"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1, "1"], [2, "2"]]},
            {"metric": {}, "values": [[1, "3"]]}
        ]}));
        assert_eq!(
            to_metric_value(&matrix),
            Ok(MetricValue::Numbers(vec![1.0, 2.0, 3.0]))
        );
        let string = data(serde_json::json!({"resultType": "string", "result": [1, "x"]}));
        assert_eq!(
            to_metric_value(&string).unwrap_err(),
            "result type \"string\" is not supported (expected scalar, vector or matrix)"
        );
    }

    #[test]
    fn allowlist_matches_scheme_host_port_and_path_prefix() {
        let list = AddressAllowlist::new([
            "http://prometheus.monitoring:9090",
            "https://mimir.example/prometheus",
        ])
        .unwrap();
        let ok = |s: &str| list.allows(&Url::parse(s).unwrap());
        assert!(ok("http://prometheus.monitoring:9090"));
        assert!(ok("http://prometheus.monitoring:9090/"));
        assert!(ok("https://mimir.example:443/prometheus"));
        assert!(ok("https://mimir.example/prometheus/tenant"));
        assert!(!ok("https://mimir.example/prometheus-admin"));
        assert!(!ok("https://mimir.example/admin"));
        assert!(!ok("http://prometheus.monitoring:9091"));
        assert!(!ok("https://prometheus.monitoring:9090"));
        assert!(!ok("http://169.254.169.254/latest/meta-data"));
        assert!(!AddressAllowlist::default().allows(&Url::parse("http://x").unwrap()));
        assert!(AddressAllowlist::allow_any().allows(&Url::parse("http://x").unwrap()));
        assert!(AddressAllowlist::new(["ftp://x"]).is_err());
        assert!(AddressAllowlist::new(["not a url"]).is_err());
    }

    #[test]
    fn range_bounds_are_sent_as_unix_seconds() {
        let t: jiff::Timestamp = "2026-01-01T00:00:00.25Z".parse().unwrap();
        assert_eq!(seconds(t), "1767225600.250");
    }
}
