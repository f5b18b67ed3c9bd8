//! AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun types.
//!
//! Field names and meanings follow Argo Rollouts (`argoproj.io/v1alpha1`), so that an Argo
//! manifest works after changing only its `apiVersion`. Sluice's extensions are marked as such
//! and listed in `docs/compat.md`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::common::{AnalysisPhase, DryRun, FieldRef, MeasurementRetention};
use crate::api::duration::DurationString;

/// The metrics, arguments and options an AnalysisTemplate or ClusterAnalysisTemplate declares.
///
/// A Rollout (or a person) turns one or more templates into an AnalysisRun, which takes the
/// measurements.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    doc = "Metrics to measure during a rollout, reusable by the Rollouts of one namespace.",
    namespaced,
    shortname = "sat",
    category = "sluice",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// The metrics to measure. Every metric needs a unique name.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Arguments the metrics refer to as `{{args.NAME}}`. An argument without a value must be
    /// supplied by whoever uses the template (usually the Rollout's `analysis.args`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Metrics whose outcome is reported but never decides the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// How many measurements to keep in status per metric (10 by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Other templates whose metrics, arguments and options are merged into this one. Two metrics
    /// with the same name are an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<AnalysisTemplateRef>,
}

/// The spec of a ClusterAnalysisTemplate: the same fields as an AnalysisTemplate, usable from
/// every namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    doc = "Metrics to measure during a rollout, reusable by Rollouts of every namespace.",
    shortname = "scat",
    category = "sluice",
    derive = "PartialEq",
    derive = "Default"
)]
pub struct ClusterAnalysisTemplateSpec {
    /// The template's metrics, arguments and options.
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// A reference to another AnalysisTemplate or ClusterAnalysisTemplate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateRef {
    /// Name of the template.
    pub template_name: String,
    /// True to look the name up among ClusterAnalysisTemplates instead of the AnalysisTemplates
    /// of the same namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster_scope: bool,
}

/// One metric: what to measure, how often, and which results count as success or failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// Name of the metric, unique within the run. It appears in status, Events and messages.
    pub name: String,
    /// Time between two measurements, as a Go duration (`30s`, `5m`). Without it the metric is
    /// measured once, unless `count` says otherwise; with it and without `count` the metric is
    /// measured until the run is terminated. May be `"{{args.NAME}}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationString>,
    /// Time to wait after the run starts before the first measurement, as a Go duration. May be
    /// `"{{args.NAME}}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<DurationString>,
    /// Number of measurements to take (an integer, or a string such as `"{{args.count}}"`).
    /// Errored measurements do not count. Omitted or 0 with an `interval`: measure until the run
    /// is terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<IntOrString>,
    /// Expression over `result` that must be true for a measurement to be successful, e.g.
    /// `result[0] >= 0.95`. Without a `failureCondition`, a false result is a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// Expression over `result` that marks a measurement as failed when true, e.g.
    /// `result[0] > 0.05`. It wins over `successCondition`. Without a `successCondition`, a false
    /// result is a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Number of failed measurements tolerated; one more fails the metric (default 0: the first
    /// failure fails it). `-1` disables the limit, which needs `consecutiveSuccessLimit` or
    /// `consecutiveFailureLimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<IntOrString>,
    /// Number of inconclusive measurements tolerated; one more makes the metric Inconclusive
    /// (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<IntOrString>,
    /// Number of errored measurements in a row tolerated; one more makes the metric Error
    /// (default 4). Errored measurements are retried after 10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<IntOrString>,
    /// Number of successful measurements in a row after which the metric is Successful early
    /// (default 0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_success_limit: Option<IntOrString>,
    /// Sluice extension: number of failed measurements in a row tolerated; one more fails the
    /// metric. Meant for flaky metrics: with it set and `failureLimit` omitted, failures that are
    /// not in a row never fail the metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failure_limit: Option<IntOrString>,
    /// Sluice extension: an empty query result is "not yet" (re-queried) instead of an Error,
    /// for a while. See `docs/analysis.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<NoDataPolicy>,
    /// Where the measurement comes from. Exactly one provider must be set.
    pub provider: MetricProvider,
}

/// The source of a metric's measurements. Exactly one provider must be set; Sluice implements
/// `prometheus`, `web` and `job`. Any other provider Argo Rollouts knows is accepted by the API
/// server but makes the run fail with an explicit error.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct MetricProvider {
    /// Query a Prometheus server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
    /// Ask an HTTP endpoint; the (JSON) answer is the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebMetric>,
    /// Run a Kubernetes Job: the measurement is Successful when it completes, Failed when it
    /// fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobMetric>,
    /// Sluice extension: a sequential statistical judge of the canary's failed requests (and,
    /// optionally, latency) against thresholds or the baseline, from cumulative Prometheus
    /// counters. See `docs/analysis.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeMetric>,
    /// Providers Sluice does not implement (kept so they can be reported by name).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: BTreeMap<String, serde_json::Value>,
}

/// Sluice extension: the `judge` provider. Every query returns a cumulative counter (one series,
/// or none while nothing was counted); the judge counts from the run's first look.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct JudgeMetric {
    /// Prometheus server URL; empty means the controller's default address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Seconds to wait for each query (30 when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Skip TLS verification.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Extra HTTP headers sent with each query.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebMetricHeader>,
    /// Counters of the canary.
    #[serde(default)]
    pub canary: JudgeQueries,
    /// Counters of the baseline (the stable version), for the comparison in messages, for
    /// `relativeToBaseline` and for latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<JudgeQueries>,
    /// Highest acceptable canary error rate, a fraction (`"0.01"`).
    #[serde(default)]
    pub acceptable_error_rate: String,
    /// Error rate that must be caught, a fraction above the acceptable one (`"0.05"`).
    #[serde(default)]
    pub unacceptable_error_rate: String,
    /// When true, the acceptable rate is at least the baseline's measured rate, and the
    /// unacceptable one moves up by as much.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relative_to_baseline: bool,
    /// Confidence of a Failed verdict, 1 − the risk of failing an acceptable canary; strictly
    /// between 0 and 1 (`"0.99"` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<String>,
    /// Chance of catching a canary at the unacceptable rate, strictly between 0 and 1 (`"0.99"`
    /// when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    /// Smallest latency effect that fails the canary: the probability that a canary request is
    /// slower than a baseline one must exceed 0.5 + this (`"0.1"` when omitted). Used when both
    /// sides have a `latencyBuckets` query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_effect_floor: Option<String>,
    /// How long to look before the metric is Inconclusive (`10m` when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DurationString>,
}

/// The cumulative counters the judge reads for one version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct JudgeQueries {
    /// PromQL returning the total number of requests (one series).
    #[serde(default)]
    pub requests: String,
    /// PromQL returning the number of failed requests (one series, or none while there is no
    /// failure).
    #[serde(default)]
    pub errors: String,
    /// PromQL returning cumulative latency histogram buckets, one series per `le`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets: Option<String>,
}

/// Sluice extension: what a measurement whose query returned no data is while the deadline has
/// not passed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NoDataPolicy {
    /// Time between two queries while there is no data (`1s` when omitted; at most the metric's
    /// `interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<DurationString>,
    /// How long a measurement may wait for data before it is an Error, as in Argo Rollouts
    /// (`1m` when omitted; `0s` gives Argo's behaviour: Error at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationString>,
}

/// A PromQL query against a Prometheus-compatible server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetric {
    /// URL of the server, e.g. `http://prometheus.monitoring:9090`. Omitted: the controller's
    /// default address. Must be on the controller's allowlist of metric provider addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The PromQL query. `{{args.NAME}}` is replaced by the argument's value.
    pub query: String,
    /// Seconds to wait for the answer before the measurement errors (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Skip verification of the server's TLS certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// PEM-encoded CA certificates to verify the server's certificate with, for a server whose
    /// certificate is signed by a private CA; may come from a Secret-backed argument. Only these
    /// CAs are trusted for this metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// Extra HTTP headers, e.g. `X-Scope-OrgID` or `Authorization: Bearer {{args.token}}` with
    /// the token taken from a Secret-backed argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebMetricHeader>,
    /// How to authenticate to the server. Sluice implements `basicAuth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<PrometheusAuth>,
    /// Run a range query (`/api/v1/query_range`) instead of an instant query; `result` is then the
    /// list of every sample of every series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_query: Option<PrometheusRangeQuery>,
}

/// An HTTP request whose answer is the measurement's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct WebMetric {
    /// `GET` (default), `POST` or `PUT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The URL to call; may use `{{args.NAME}}`. Must be on the controller's allowlist of metric
    /// provider addresses. Redirects are not followed.
    pub url: String,
    /// HTTP headers, e.g. `Authorization: Bearer {{args.token}}` with the token taken from a
    /// Secret-backed argument (redacted in status, Events and logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<WebMetricHeader>,
    /// Request body as text (`POST` and `PUT` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Request body as JSON, sent with `Content-Type: application/json` (`POST` and `PUT` only;
    /// not together with `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_any")]
    pub json_body: Option<serde_json::Value>,
    /// Seconds to wait for the whole answer before the measurement errors (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Kubernetes JSONPath selecting the value from a JSON answer, e.g. `{$.data.ok}` (default
    /// `{$}`: the whole document). A body that is not JSON is the result as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Skip verification of the server's TLS certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Fields Sluice does not implement (`authentication`), kept so they can be reported.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: BTreeMap<String, serde_json::Value>,
}

/// A Kubernetes Job run as one measurement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobMetric {
    /// Labels and annotations of the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JobMetricMetadata>,
    /// The `batch/v1` JobSpec; `{{args.NAME}}` anywhere in it is replaced by the argument's
    /// value.
    #[schemars(schema_with = "preserve_unknown_object")]
    pub spec: serde_json::Value,
}

/// Labels and annotations put on a metric's Job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobMetricMetadata {
    /// Labels of the Job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the Job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn preserve_unknown_any(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// One HTTP header sent with a provider request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebMetricHeader {
    /// Header name.
    pub key: String,
    /// Header value; may use `{{args.NAME}}`.
    pub value: String,
}

/// Authentication to a Prometheus server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct PrometheusAuth {
    /// HTTP basic authentication; use Secret-backed arguments for the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Methods Sluice does not implement (`sigv4`, `oauth2`), kept so they can be reported.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: BTreeMap<String, serde_json::Value>,
}

/// HTTP basic authentication credentials.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// User name; may use `{{args.NAME}}`.
    pub username: String,
    /// Password; use `{{args.NAME}}` with a Secret-backed argument.
    pub password: String,
}

/// The time window and resolution of a Prometheus range query.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRangeQuery {
    /// Start of the window, as an expression such as `now() - duration("5m")`.
    pub start: String,
    /// End of the window, as an expression such as `now()`.
    pub end: String,
    /// Resolution, as a Go duration such as `1m`.
    pub step: String,
}

/// An argument the metrics refer to as `{{args.NAME}}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Argument {
    /// Name of the argument.
    pub name: String,
    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where to read the value from, when it is not literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
}

/// Where an argument's value comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ValueFrom {
    /// A key of a Secret in the run's namespace. The value never appears in status, Events or
    /// logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A field of the Rollout, resolved when the run is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<FieldRef>,
}

/// A key of a Secret.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema, Default,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// An AnalysisRun: one execution of one or more templates' metrics.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AnalysisRun",
    doc = "One execution of analysis metrics: the measurements taken and the verdict.",
    namespaced,
    status = "AnalysisRunStatus",
    shortname = "sar",
    category = "sluice",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase","description":"Phase of the run"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","description":"Why the run is in its phase"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    /// The metrics to measure.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Arguments the metrics refer to as `{{args.NAME}}`. Every argument needs a value or a
    /// `valueFrom`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Set to true to stop measuring: the run completes with the worst phase so far, or
    /// Successful when nothing was measured yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub terminate: bool,
    /// Metrics whose outcome is reported but never decides the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRun>,
    /// How many measurements to keep in status per metric (10 by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// When to delete the run after it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_strategy: Option<TtlStrategy>,
}

/// When to delete a completed AnalysisRun. The most specific field that applies wins.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct TtlStrategy {
    /// Seconds to keep the run after it completes, whatever its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after_completion: Option<i32>,
    /// Seconds to keep the run after it failed or errored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after_failure: Option<i32>,
    /// Seconds to keep the run after it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_after_success: Option<i32>,
}

/// What the run has measured so far and what it concluded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    /// Phase of the run: the worst phase of its (non-dry-run) metrics.
    #[serde(default)]
    pub phase: AnalysisPhase,
    /// Why the run is in its phase: which metric, which value, which condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the run started measuring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Results of each metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
    /// Counts of metrics by phase, dry-run metrics excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_summary: Option<RunSummary>,
    /// Counts of dry-run metrics by phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run_summary: Option<RunSummary>,
}

/// Counts of metrics by phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Number of metrics.
    #[serde(default)]
    pub count: i32,
    /// Number of successful metrics.
    #[serde(default)]
    pub successful: i32,
    /// Number of failed metrics.
    #[serde(default)]
    pub failed: i32,
    /// Number of inconclusive metrics.
    #[serde(default)]
    pub inconclusive: i32,
    /// Number of errored metrics.
    #[serde(default)]
    pub error: i32,
}

/// The measurements of one metric and what they add up to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// Name of the metric.
    pub name: String,
    /// Phase of the metric.
    #[serde(default)]
    pub phase: AnalysisPhase,
    /// The most recent measurements, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    /// Why the metric is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Number of measurements that reached a verdict (errors excluded).
    #[serde(default)]
    pub count: i32,
    /// Number of successful measurements.
    #[serde(default)]
    pub successful: i32,
    /// Number of failed measurements.
    #[serde(default)]
    pub failed: i32,
    /// Number of inconclusive measurements.
    #[serde(default)]
    pub inconclusive: i32,
    /// Number of errored measurements.
    #[serde(default)]
    pub error: i32,
    /// Errored measurements in a row, up to the latest.
    #[serde(default)]
    pub consecutive_error: i32,
    /// Successful measurements in a row, up to the latest.
    #[serde(default)]
    pub consecutive_success: i32,
    /// Sluice extension: failed measurements in a row, up to the latest (errors neither count nor
    /// break the streak).
    #[serde(default)]
    pub consecutive_failure: i32,
    /// True when the metric is dry-run: reported, but not deciding the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Provider details of the latest measurement, e.g. `ResolvedPrometheusQuery` (Secret values
    /// redacted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// One measurement of a metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Verdict of this measurement.
    #[serde(default)]
    pub phase: AnalysisPhase,
    /// The value the provider returned, as text (`0.97`, `[0.97,0.99]`, `NaN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When the measurement started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the measurement finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why the measurement has its verdict; for an error, what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Provider details, e.g. the resolved query (Secret values redacted) and warnings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}
