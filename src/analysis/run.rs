//! AnalysisRun reconcile logic, pure: which measurements are due now, and what the run's status
//! becomes once they return.
//!
//! The controller drives it in two calls per reconcile:
//! 1. [`begin`] with the run, the Secret values its arguments need ([`secret_refs`]) and `now`:
//!    it returns the measurements to take, with every argument substituted;
//! 2. it takes them (see `metrics::prometheus`) and hands the results to [`Pass::finish`], which
//!    returns the new status, when to come back, when to delete the run, and what to report as
//!    Events (phase changes, and each metric's first errored measurement).
//!
//! [`secret_refs`]: crate::analysis::args::secret_refs

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::analysis::accounting::{
    self, DEFAULT_MEASUREMENT_RETENTION, ERROR_RETRY_INTERVAL, MetricLimits, MetricPhase,
};
use crate::analysis::args::{ResolvedArgs, SecretValues};
use crate::analysis::condition::{self, Conditions};
use crate::analysis::jsonpath::JsonPath;
use crate::analysis::validation;
use crate::analysis::value::{MetricValue, bounded_status_text};
use crate::api::analysis::{
    AnalysisRunSpec, AnalysisRunStatus, JobMetricMetadata, Measurement, Metric, MetricResult,
};
use crate::api::common::AnalysisPhase;

/// Metadata key of the resolved query (Secret values redacted), as Argo Rollouts names it.
pub const RESOLVED_QUERY_KEY: &str = "ResolvedPrometheusQuery";
/// Timeout of a Prometheus query when `timeout` is omitted.
pub const DEFAULT_PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of a web request when `timeoutSeconds` is omitted or not positive (as in Argo).
pub const DEFAULT_WEB_TIMEOUT: Duration = Duration::from_secs(10);
/// Measurement metadata key of a Job measurement's Job name, as Argo Rollouts names it.
pub const JOB_NAME_KEY: &str = "job-name";
/// Measurement metadata key of a Job measurement's Job namespace, as Argo Rollouts names it.
pub const JOB_NAMESPACE_KEY: &str = "job-namespace";
/// Message of a Job measurement stopped because the run stopped, as Argo Rollouts writes it.
pub const METRIC_TERMINATED: &str = "Metric Terminated";
/// Metadata key of a measurement waiting for data: the reason the conditions could not decide
/// (the query returned no data), kept to become the Error's message at the deadline.
pub const NO_DATA_KEY: &str = "sluice.dev/no-data";
/// Metadata key of a measurement in flight that is not a Job (waiting for data, or a judge
/// still looking): when it was last looked at.
pub const LOOKED_AT_KEY: &str = "sluice.dev/looked-at";
/// Metadata key of a judge measurement's counting state (JSON), carried from look to look.
pub const JUDGE_STATE_KEY: &str = "sluice.dev/judge-state";
/// Time between two queries of a metric whose query returned no data yet, when
/// `noData.retryInterval` is omitted.
pub const DEFAULT_NO_DATA_RETRY: Duration = Duration::from_secs(1);
/// How long a measurement may wait for data, when `noData.timeout` is omitted.
pub const DEFAULT_NO_DATA_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between two looks of a judge metric, when `interval` is omitted.
pub const DEFAULT_JUDGE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a judge looks before it is Inconclusive, when `deadline` is omitted.
pub const DEFAULT_JUDGE_DEADLINE: Duration = Duration::from_secs(600);
/// Longest wait between two looks at a running Job. The controller also watches its Jobs, so
/// this only bounds how late a missed change is noticed.
pub const MAX_JOB_POLL: Duration = Duration::from_secs(30);

/// A measurement to take now.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementRequest {
    /// Name of the metric.
    pub metric: String,
    /// What to ask, with every argument substituted.
    pub provider: ProviderRequest,
    /// Metadata to keep on the measurement (the resolved query, Secret values redacted).
    pub metadata: BTreeMap<String, String>,
}

/// What to ask which provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderRequest {
    /// A Prometheus query.
    Prometheus(PrometheusRequest),
    /// An HTTP request.
    Web(WebRequest),
    /// Something to do with a metric's Job.
    Job(JobRequest),
    /// A look of the judge: several Prometheus queries and a sequential test.
    Judge(Box<JudgeRequest>),
}

/// The PromQL queries of one version for the judge, arguments substituted.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeQueries {
    /// Cumulative requests.
    pub requests: String,
    /// Cumulative failed requests.
    pub errors: String,
    /// Cumulative latency histogram buckets, one series per `le`.
    pub latency: Option<String>,
}

/// A look of a judge metric.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    /// Where and how to query (its `query` is unused).
    pub prometheus: PrometheusRequest,
    /// The canary's counters.
    pub canary: JudgeQueries,
    /// The baseline's counters.
    pub baseline: Option<JudgeQueries>,
    /// The test's settings.
    pub settings: crate::analysis::judge::Settings,
    /// How long to look before the metric is Inconclusive.
    pub deadline: Duration,
    /// The counting state of the previous look (JSON), `None` at the first look.
    pub state: Option<String>,
    /// When the look is taken.
    pub now: Timestamp,
}

/// A web metric's request with every argument substituted. Its `Debug` output hides header
/// values and the body, which may carry Secret values.
#[derive(Clone, PartialEq)]
pub struct WebRequest {
    /// `GET`, `POST` or `PUT`.
    pub method: String,
    /// The URL, as sent.
    pub url: String,
    /// The URL with Secret values redacted, for messages and logs.
    pub display_url: String,
    /// Headers (name, value).
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<String>,
    /// True when the body came from `jsonBody`: it is sent as `application/json`.
    pub json_body: bool,
    /// How long to wait for the whole answer.
    pub timeout: Duration,
    /// What to pick out of a JSON answer.
    pub json_path: JsonPath,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Secret values to redact from whatever the server answers (it may echo them).
    pub secrets: Vec<String>,
}

impl fmt::Debug for WebRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRequest")
            .field("method", &self.method)
            .field("url", &self.display_url)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("body", &self.body.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("json_path", &self.json_path.to_string())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// What to do with a metric's Job. A Job measurement is asynchronous, as in Argo Rollouts: it
/// starts (Running, the Job's name in its metadata), is polled on later passes, and ends when the
/// Job completes or fails, or when the run stops (the Job is then deleted).
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    /// Create the Job of a new measurement.
    Start {
        /// The metric's JobSpec, arguments substituted.
        spec: serde_json::Value,
        /// Labels and annotations for the Job.
        metadata: JobMetricMetadata,
        /// The measurement's number in the metric (1 for the first), part of the Job's name.
        sequence: i32,
    },
    /// Read the Job of the running measurement.
    Poll {
        /// Name of the Job.
        name: String,
    },
    /// Delete the Job of the running measurement: the run is stopping.
    Terminate {
        /// Name of the Job.
        name: String,
    },
}

/// A Prometheus query with every argument substituted. Its `Debug` output hides header values,
/// the password and the raw query, which may all carry Secret values.
#[derive(Clone, PartialEq)]
pub struct PrometheusRequest {
    /// Server URL; `None` means the controller's default address.
    pub address: Option<String>,
    /// The PromQL query, as sent.
    pub query: String,
    /// The query with Secret values redacted, for status, Events and logs.
    pub display_query: String,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// Skip TLS verification.
    pub insecure: bool,
    /// PEM CA bundle to verify the server with, instead of the system's roots.
    pub ca_cert: Option<String>,
    /// Extra headers (name, value).
    pub headers: Vec<(String, String)>,
    /// Basic authentication (user name, password).
    pub basic_auth: Option<(String, String)>,
    /// Window of a range query; `None` for an instant query.
    pub range: Option<RangeWindow>,
}

impl fmt::Debug for PrometheusRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusRequest")
            .field("address", &self.address)
            .field("query", &self.display_query)
            .field("timeout", &self.timeout)
            .field("insecure", &self.insecure)
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<set>"))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("basic_auth", &self.basic_auth.as_ref().map(|_| "<set>"))
            .field("range", &self.range)
            .finish()
    }
}

/// The time window of a range query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeWindow {
    /// First instant.
    pub start: Timestamp,
    /// Last instant.
    pub end: Timestamp,
    /// Resolution.
    pub step: Duration,
}

/// What a provider answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderResult {
    /// The value, or why there is none (connection refused, timeout, bad query...).
    pub value: Result<MetricValue, String>,
    /// Provider details to keep on the measurement (e.g. Prometheus warnings).
    pub metadata: BTreeMap<String, String>,
    /// The measurement's phase when the provider decides it itself (a Job: Running while it
    /// runs, Successful when it completes, Failed when it fails), with why; the conditions do
    /// not apply then. `None`: the conditions decide from the value.
    pub phase: Option<(AnalysisPhase, Option<String>)>,
}

impl ProviderResult {
    /// A value (or an error) for the conditions to judge.
    pub fn measured(
        value: Result<MetricValue, String>,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        ProviderResult {
            value,
            metadata,
            phase: None,
        }
    }
}

/// A measurement that was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementResult {
    /// Name of the metric.
    pub metric: String,
    /// When the request was sent.
    pub started_at: Timestamp,
    /// When the answer (or the error) came.
    pub finished_at: Timestamp,
    /// The answer.
    pub result: ProviderResult,
    /// Metadata of the request ([`MeasurementRequest::metadata`]).
    pub request_metadata: BTreeMap<String, String>,
}

impl MeasurementRequest {
    /// Pairs this request with what the provider answered.
    pub fn into_result(
        self,
        started_at: Timestamp,
        finished_at: Timestamp,
        result: ProviderResult,
    ) -> MeasurementResult {
        MeasurementResult {
            metric: self.metric,
            started_at,
            finished_at,
            result,
            request_metadata: self.metadata,
        }
    }
}

/// A phase change, to report as an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The metric that changed, or `None` for the run itself.
    pub metric: Option<String>,
    /// The phase before.
    pub from: AnalysisPhase,
    /// The phase after.
    pub to: AnalysisPhase,
    /// Why.
    pub message: Option<String>,
}

impl Transition {
    /// Event reason, as Argo Rollouts writes it: `AnalysisRunFailed`, `MetricSuccessful`...
    pub fn reason(&self) -> String {
        match self.metric {
            Some(_) => format!("Metric{}", self.to),
            None => format!("AnalysisRun{}", self.to),
        }
    }

    /// True for a Warning Event (Failed or Error).
    pub fn is_warning(&self) -> bool {
        matches!(self.to, AnalysisPhase::Failed | AnalysisPhase::Error)
    }
}

/// A metric's first errored measurement in a run, to report as a Warning Event at once: the run
/// keeps retrying (every [`ERROR_RETRY_INTERVAL`]) for a while before the metric errors, and
/// whoever watches the rollout should not have to wait for that to learn why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstError {
    /// Name of the metric.
    pub metric: String,
    /// Why the measurement could not be taken (Secret values redacted).
    pub message: String,
    /// Errors in a row the metric tolerates before it errors.
    pub consecutive_error_limit: i32,
}

impl FirstError {
    /// Event reason. Argo Rollouts has no Event for a single errored measurement (its
    /// `MetricError` reports a metric that completed in Error), so this one has its own name.
    pub const REASON: &'static str = "MeasurementError";

    /// Event note: the metric, the reason, and how long the run keeps trying.
    pub fn note(&self) -> String {
        format!(
            "metric \"{}\" could not be measured: {} (retried every {}s; more than {} errors in a \
             row error the metric)",
            self.metric,
            self.message,
            ERROR_RETRY_INTERVAL.as_secs(),
            self.consecutive_error_limit
        )
    }
}

/// The outcome of a reconcile pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The run's new status.
    pub status: AnalysisRunStatus,
    /// When to reconcile again (the next measurement or the end of an initial delay); `None` when
    /// the run is completed.
    pub requeue_at: Option<Timestamp>,
    /// When to delete the completed run, from its `ttlStrategy`.
    pub delete_at: Option<Timestamp>,
    /// Phase changes of metrics and of the run, for Events.
    pub transitions: Vec<Transition>,
    /// Metrics whose first errored measurement of the run is in this status, for Events. A
    /// metric appears here once per run: the `error` counter in status remembers it.
    pub first_errors: Vec<FirstError>,
}

struct ResolvedMetric {
    spec: Metric,
    /// Time between queries while a measurement waits for data, and how long it may wait (zero:
    /// no waiting, Argo's behaviour).
    no_data: (Duration, Duration),
    limits: MetricLimits,
    conditions: Conditions,
    dry_run: bool,
    retention: usize,
    request: ProviderRequest,
}

enum State {
    Completed,
    Invalid(String),
    Active {
        metrics: Vec<ResolvedMetric>,
        args: ResolvedArgs,
        terminate: bool,
    },
}

/// A reconcile pass between [`begin`] and [`Pass::finish`].
pub struct Pass {
    /// The measurements to take now.
    pub requests: Vec<MeasurementRequest>,
    status: AnalysisRunStatus,
    spec_ttl: Option<crate::api::analysis::TtlStrategy>,
    state: State,
}

/// Starts a reconcile pass: resolves arguments, validates the metrics and lists the measurements
/// due at `now`. A run that cannot be resolved (missing argument, invalid metric, unsupported
/// provider) gets no measurements, and [`Pass::finish`] puts it in the Error phase with the reason.
pub fn begin(
    spec: &AnalysisRunSpec,
    status: Option<&AnalysisRunStatus>,
    secrets: &SecretValues,
    now: Timestamp,
) -> Pass {
    let status = status.cloned().unwrap_or_default();
    let mut pass = Pass {
        requests: Vec::new(),
        spec_ttl: spec.ttl_strategy.clone(),
        state: State::Completed,
        status,
    };
    if pass.status.phase.is_completed() {
        return pass;
    }
    let (metrics, args) = match resolve(spec, secrets, now) {
        Ok(r) => r,
        Err(message) => {
            pass.state = State::Invalid(message);
            return pass;
        }
    };
    let started_at = pass.status.started_at.as_ref().map_or(now, |t| t.0);
    let terminating = spec.terminate
        || pass.status.metric_results.iter().any(|r| {
            is_abort_phase(r.phase) && metrics.iter().any(|m| m.spec.name == r.name && !m.dry_run)
        });
    for m in &metrics {
        let result = pass
            .status
            .metric_results
            .iter()
            .find(|r| r.name == m.spec.name);
        // A measurement in flight (a Job) is resumed, or stopped when the run stops.
        if let Some(name) = running_job(result) {
            let provider = ProviderRequest::Job(if terminating {
                JobRequest::Terminate { name }
            } else {
                JobRequest::Poll { name }
            });
            pass.requests.push(MeasurementRequest {
                metric: m.spec.name.clone(),
                provider,
                metadata: BTreeMap::new(),
            });
            continue;
        }
        if !terminating && is_due(m, result, started_at, now) {
            let provider = match &m.request {
                ProviderRequest::Job(JobRequest::Start { spec, metadata, .. }) => {
                    // Argo's numbering: every measurement ever taken, plus one.
                    let sequence = result.map_or(1, |r| r.count + r.error + 1);
                    ProviderRequest::Job(JobRequest::Start {
                        spec: spec.clone(),
                        metadata: metadata.clone(),
                        sequence,
                    })
                }
                ProviderRequest::Judge(j) => {
                    let mut j = j.clone();
                    j.state = result.and_then(judge_state);
                    j.now = now;
                    ProviderRequest::Judge(j)
                }
                other => other.clone(),
            };
            pass.requests.push(MeasurementRequest {
                metric: m.spec.name.clone(),
                metadata: request_metadata(&provider),
                provider,
            });
        }
    }
    pass.state = State::Active {
        metrics,
        args,
        terminate: spec.terminate,
    };
    pass
}

fn request_metadata(request: &ProviderRequest) -> BTreeMap<String, String> {
    match request {
        ProviderRequest::Prometheus(p) => {
            BTreeMap::from([(RESOLVED_QUERY_KEY.to_string(), p.display_query.clone())])
        }
        ProviderRequest::Web(_) | ProviderRequest::Job(_) | ProviderRequest::Judge(_) => {
            BTreeMap::new()
        }
    }
}

/// The latest counting state of a judge metric, from its measurements.
fn judge_state(result: &MetricResult) -> Option<String> {
    result
        .measurements
        .iter()
        .rev()
        .find_map(|m| m.metadata.get(JUDGE_STATE_KEY).cloned())
}

/// When a measurement in flight that is not a Job (waiting for data, or a judge still looking)
/// was last looked at.
fn looked_at(m: &Measurement) -> Option<Timestamp> {
    if m.phase.is_completed() {
        return None;
    }
    m.metadata.get(LOOKED_AT_KEY)?.parse().ok()
}

/// The Job of a metric's measurement in flight, if its latest measurement is one.
fn running_job(result: Option<&MetricResult>) -> Option<String> {
    let last = result?.measurements.last()?;
    if last.phase.is_completed() {
        return None;
    }
    last.metadata.get(JOB_NAME_KEY).cloned()
}

/// When to look at a running Job again: Argo's growing delay (√(2·elapsed) seconds), at least a
/// second and at most [`MAX_JOB_POLL`].
fn job_poll_at(result: &MetricResult, now: Timestamp) -> Option<Timestamp> {
    let last = result.measurements.last()?;
    if last.phase.is_completed() || !last.metadata.contains_key(JOB_NAME_KEY) {
        return None;
    }
    let started = last.started_at.as_ref().map_or(now, |t| t.0);
    let elapsed = (now.as_millisecond() - started.as_millisecond()).max(0) as f64 / 1000.0;
    let delay =
        Duration::from_secs_f64((2.0 * elapsed).sqrt()).clamp(Duration::from_secs(1), MAX_JOB_POLL);
    Some(add(now, delay))
}

fn is_abort_phase(p: AnalysisPhase) -> bool {
    matches!(
        p,
        AnalysisPhase::Failed | AnalysisPhase::Error | AnalysisPhase::Inconclusive
    )
}

/// A status time, cut to whole seconds: that is all a Kubernetes `Time` keeps, and the status
/// computed here must be the status read back after a restart.
fn stamp(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// When a metric should be measured next, or `None` when it needs nothing more.
fn next_measurement(
    m: &ResolvedMetric,
    result: Option<&MetricResult>,
    started_at: Timestamp,
) -> Option<Timestamp> {
    if result.is_some_and(|r| r.phase.is_completed()) {
        return None;
    }
    let Some(last) = result.and_then(|r| r.measurements.last()) else {
        return Some(add(started_at, m.limits.initial_delay.unwrap_or_default()));
    };
    if let Some(at) = looked_at(last) {
        // Waiting for data, or a judge still looking: soon again.
        let every = if last.metadata.contains_key(NO_DATA_KEY) {
            m.no_data.0
        } else {
            m.limits.interval.unwrap_or(DEFAULT_JUDGE_INTERVAL)
        };
        return Some(add(at, every));
    }
    let finished = last.finished_at.as_ref().map_or(started_at, |t| t.0);
    if last.phase == AnalysisPhase::Error {
        return Some(add(finished, ERROR_RETRY_INTERVAL));
    }
    if let Some(count) = m.limits.count
        && result.is_some_and(|r| r.count >= count)
    {
        return None;
    }
    m.limits.interval.map(|i| add(finished, i))
}

fn is_due(
    m: &ResolvedMetric,
    result: Option<&MetricResult>,
    started_at: Timestamp,
    now: Timestamp,
) -> bool {
    next_measurement(m, result, started_at).is_some_and(|t| t <= now)
}

fn resolve(
    spec: &AnalysisRunSpec,
    secrets: &SecretValues,
    now: Timestamp,
) -> Result<(Vec<ResolvedMetric>, ResolvedArgs), String> {
    let args = ResolvedArgs::resolve(&spec.args, secrets).map_err(|e| e.to_string())?;
    if let Some(e) = validation::check_spec(
        &spec.metrics,
        &spec.dry_run,
        &spec.measurement_retention,
        false,
    )
    .first()
    {
        return Err(e.status_message());
    }
    let names: Vec<&str> = spec.metrics.iter().map(|m| m.name.as_str()).collect();
    let dry_run =
        validation::matched_metrics(spec.dry_run.iter().map(|d| d.metric_name.as_str()), &names);
    let retention_patterns = validation::matched_metrics(
        spec.measurement_retention
            .iter()
            .map(|d| d.metric_name.as_str()),
        &names,
    );
    let mut metrics = Vec::with_capacity(spec.metrics.len());
    for (i, raw) in spec.metrics.iter().enumerate() {
        // Before substitution: the placeholders of an unsupported provider are not the problem.
        validation::check_provider(raw).map_err(|e| e.status_message(&raw.name))?;
        let m = args.resolve_metric(raw).map_err(|e| e.to_string())?;
        let mut limits = validation::check_limits(&m).map_err(|e| e.status_message(&m.name))?;
        if m.provider.judge.is_some() {
            // A judge decides once, after as many looks as it needs.
            limits.count = Some(1);
        }
        let no_data = no_data_policy(&m, &limits)?;
        let conditions = Conditions::compile(
            m.success_condition.as_deref(),
            m.failure_condition.as_deref(),
        )
        .map_err(|e| format!("metric \"{}\": {}", m.name, args.redact(&e.to_string())))?;
        let request = provider_request(&m, &args, now)
            .map_err(|e| format!("metric \"{}\": {}", m.name, args.redact(&e)))?;
        let retention = retention_patterns
            .iter()
            .position(|matched| matched.contains(&i))
            .and_then(|p| usize::try_from(spec.measurement_retention[p].limit).ok())
            .unwrap_or(DEFAULT_MEASUREMENT_RETENTION);
        metrics.push(ResolvedMetric {
            no_data,
            dry_run: dry_run.iter().any(|matched| matched.contains(&i)),
            spec: m,
            limits,
            conditions,
            retention,
            request,
        });
    }
    Ok((metrics, args))
}

/// A metric's `noData` policy: (time between queries, how long to wait). Only Prometheus
/// metrics wait for data; the others get no waiting.
fn no_data_policy(m: &Metric, limits: &MetricLimits) -> Result<(Duration, Duration), String> {
    if m.provider.prometheus.is_none() {
        return Ok((DEFAULT_NO_DATA_RETRY, Duration::ZERO));
    }
    let p = m.no_data.clone().unwrap_or_default();
    let read = |field: &str,
                d: &Option<crate::api::duration::DurationString>,
                default: Duration| {
        match d.as_ref().map(|d| d.parse()) {
            None | Some(Ok(None)) => Ok(default),
            Some(Ok(Some(d))) if d.is_negative() => Err(format!(
                "metric \"{}\": noData.{field} must not be negative",
                m.name
            )),
            Some(Ok(Some(d))) => Ok(Duration::from(d)),
            Some(Err(e)) => Err(format!("metric \"{}\": noData.{field}: {e}", m.name)),
        }
    };
    let mut retry = read("retryInterval", &p.retry_interval, DEFAULT_NO_DATA_RETRY)?;
    if retry.is_zero() {
        retry = DEFAULT_NO_DATA_RETRY;
    }
    if let Some(i) = limits.interval {
        retry = retry.min(i);
    }
    let timeout = read("timeout", &p.timeout, DEFAULT_NO_DATA_TIMEOUT)?;
    Ok((retry, timeout))
}

/// Builds a judge metric's request; the checks are [`validation::check_judge`], shared with
/// lint.
fn judge_request(
    j: &crate::api::analysis::JudgeMetric,
    args: &ResolvedArgs,
    now: Timestamp,
) -> Result<ProviderRequest, String> {
    let checked = validation::check_judge(j)?;
    let timeout = match j.timeout {
        Some(t) if t > 0 => Duration::from_secs(t.unsigned_abs()),
        _ => DEFAULT_PROMETHEUS_TIMEOUT,
    };
    let queries = |q: &crate::api::analysis::JudgeQueries| JudgeQueries {
        requests: q.requests.trim().to_string(),
        errors: q.errors.trim().to_string(),
        latency: q
            .latency_buckets
            .as_ref()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty()),
    };
    Ok(ProviderRequest::Judge(Box::new(JudgeRequest {
        prometheus: PrometheusRequest {
            address: j.address.clone().filter(|a| !a.trim().is_empty()),
            query: String::new(),
            display_query: args.redact(&j.canary.requests),
            timeout,
            insecure: j.insecure,
            ca_cert: None,
            headers: j
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            basic_auth: None,
            range: None,
        },
        canary: queries(&j.canary),
        baseline: j.baseline.as_ref().map(queries),
        settings: checked.settings,
        deadline: checked.deadline.unwrap_or(DEFAULT_JUDGE_DEADLINE),
        state: None,
        now,
    })))
}

/// Builds the request of a metric whose arguments are substituted. The checks are
/// [`validation::check_provider`] and [`validation::check_prometheus`], shared with lint.
fn provider_request(
    m: &Metric,
    args: &ResolvedArgs,
    now: Timestamp,
) -> Result<ProviderRequest, String> {
    validation::check_provider(m).map_err(|e| e.located())?;
    if let Some(w) = &m.provider.web {
        return web_request(w, args);
    }
    if let Some(j) = &m.provider.judge {
        return judge_request(j, args, now);
    }
    if let Some(j) = &m.provider.job {
        validation::check_job(j).map_err(|e| e.located())?;
        return Ok(ProviderRequest::Job(JobRequest::Start {
            spec: j.spec.clone(),
            metadata: j.metadata.clone().unwrap_or_default(),
            sequence: 1,
        }));
    }
    let Some(p) = &m.provider.prometheus else {
        return Err(validation::MetricError::NoProvider.located());
    };
    if let Some(e) = validation::check_prometheus(p).first() {
        return Err(e.located());
    }
    let timeout = match p.timeout {
        None => DEFAULT_PROMETHEUS_TIMEOUT,
        // 0 would fail every query at once; Argo treats it as "use the default".
        Some(t) if t <= 0 => DEFAULT_PROMETHEUS_TIMEOUT,
        Some(t) => Duration::from_secs(t.unsigned_abs()),
    };
    let basic_auth = p
        .authentication
        .as_ref()
        .and_then(|a| a.basic_auth.as_ref())
        .map(|b| (b.username.clone(), b.password.clone()));
    let range = match &p.range_query {
        None => None,
        Some(r) => {
            let start = condition::evaluate_time(&r.start, now)
                .map_err(|e| format!("provider.prometheus.rangeQuery.start: {e}"))?;
            let end = condition::evaluate_time(&r.end, now)
                .map_err(|e| format!("provider.prometheus.rangeQuery.end: {e}"))?;
            // check_prometheus has made sure the step parses and is positive.
            let step = r
                .step
                .parse::<kube::core::Duration>()
                .map(Duration::from)
                .unwrap_or_default();
            if end < start {
                return Err("provider.prometheus.rangeQuery: end is before start".to_string());
            }
            Some(RangeWindow { start, end, step })
        }
    };
    Ok(ProviderRequest::Prometheus(PrometheusRequest {
        address: p.address.clone().filter(|a| !a.trim().is_empty()),
        display_query: args.redact(&p.query),
        query: p.query.clone(),
        timeout,
        insecure: p.insecure,
        ca_cert: p.ca_cert.clone().filter(|c| !c.trim().is_empty()),
        headers: p
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
        basic_auth,
        range,
    }))
}

/// Builds a web metric's request; the checks are [`validation::check_web`], shared with lint.
fn web_request(
    w: &crate::api::analysis::WebMetric,
    args: &ResolvedArgs,
) -> Result<ProviderRequest, String> {
    if let Some(e) = validation::check_web(w).first() {
        return Err(e.located());
    }
    let json_path = validation::web_json_path(w)
        .map_err(|e| validation::MetricError::InvalidJsonPath(e.to_string()).located())?;
    let (body, json_body) = match (&w.body, &w.json_body) {
        (_, Some(j)) => (Some(j.to_string()), true),
        (Some(b), None) if !b.is_empty() => (Some(b.clone()), false),
        _ => (None, false),
    };
    let timeout = match w.timeout_seconds {
        Some(t) if t > 0 => Duration::from_secs(t.unsigned_abs()),
        _ => DEFAULT_WEB_TIMEOUT,
    };
    Ok(ProviderRequest::Web(WebRequest {
        method: validation::web_method(w),
        url: w.url.trim().to_string(),
        display_url: args.redact(w.url.trim()),
        headers: w
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
        body,
        json_body,
        timeout,
        json_path,
        insecure: w.insecure,
        secrets: args.secret_values(),
    }))
}

impl Pass {
    /// Records the measurements taken, assesses every metric and the run, and says when to come
    /// back. Results for metrics that are unknown or already completed are ignored.
    pub fn finish(self, results: Vec<MeasurementResult>, now: Timestamp) -> Update {
        let Pass {
            status: mut st,
            spec_ttl,
            state,
            ..
        } = self;
        let before = st.phase;
        let mut transitions = Vec::new();
        let mut first_errors = Vec::new();
        match state {
            State::Completed => {}
            State::Invalid(message) => {
                st.phase = AnalysisPhase::Error;
                st.message = Some(message);
                st.started_at.get_or_insert(stamp(now));
                st.completed_at = Some(stamp(now));
            }
            State::Active {
                metrics,
                args,
                terminate,
            } => {
                let started_at = st.started_at.as_ref().map_or(now, |t| t.0);
                st.started_at = Some(stamp(started_at));
                for r in results {
                    let Some(m) = metrics.iter().find(|m| m.spec.name == r.metric) else {
                        continue;
                    };
                    let idx = match st.metric_results.iter().position(|x| x.name == r.metric) {
                        Some(i) => i,
                        None => {
                            st.metric_results.push(MetricResult {
                                name: r.metric.clone(),
                                dry_run: m.dry_run,
                                ..Default::default()
                            });
                            st.metric_results.len() - 1
                        }
                    };
                    if st.metric_results[idx].phase.is_completed() {
                        continue;
                    }
                    let first =
                        st.metric_results[idx].count == 0 && st.metric_results[idx].error == 0;
                    let mut measurement = measure(m, &args, r, first);
                    // A measurement in flight (a Job) is replaced by its next state, which keeps
                    // its start and what it learned before.
                    let in_flight = st.metric_results[idx]
                        .measurements
                        .last()
                        .is_some_and(|x| !x.phase.is_completed());
                    if in_flight && let Some(prev) = st.metric_results[idx].measurements.pop() {
                        measurement.started_at = prev.started_at;
                        let mut metadata = prev.metadata;
                        metadata.extend(std::mem::take(&mut measurement.metadata));
                        measurement.metadata = metadata;
                    }
                    settle_no_data(&mut measurement, m.no_data.1, now);
                    // As in Argo, the metric result carries the latest resolved query.
                    st.metric_results[idx].metadata = measurement
                        .metadata
                        .iter()
                        .filter(|(k, _)| k.as_str() == RESOLVED_QUERY_KEY)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let errored = measurement.phase == AnalysisPhase::Error;
                    let message = measurement.message.clone().unwrap_or_default();
                    let result = &mut st.metric_results[idx];
                    accounting::record(result, measurement, m.retention);
                    if errored && result.error == 1 {
                        first_errors.push(FirstError {
                            metric: m.spec.name.clone(),
                            message,
                            consecutive_error_limit: m.limits.consecutive_error_limit,
                        });
                    }
                }
                // Keep results in the order of the spec, whatever order they were measured in.
                st.metric_results.sort_by_key(|r| {
                    metrics
                        .iter()
                        .position(|m| m.spec.name == r.name)
                        .unwrap_or(usize::MAX)
                });
                assess(&mut st, &metrics, terminate, &mut transitions);
                if st.phase.is_completed() {
                    st.completed_at = Some(stamp(now));
                }
                let requeue = if st.phase.is_completed() {
                    None
                } else {
                    metrics
                        .iter()
                        .filter_map(|m| {
                            let r = st.metric_results.iter().find(|r| r.name == m.spec.name);
                            match r.and_then(|r| job_poll_at(r, now)) {
                                Some(at) => Some(at),
                                None => next_measurement(m, r, started_at),
                            }
                        })
                        .min()
                };
                if before != st.phase {
                    transitions.push(Transition {
                        metric: None,
                        from: before,
                        to: st.phase,
                        message: st.message.clone(),
                    });
                }
                return Update {
                    delete_at: delete_at(&st, spec_ttl.as_ref()),
                    status: st,
                    requeue_at: requeue,
                    transitions,
                    first_errors,
                };
            }
        }
        if before != st.phase {
            transitions.push(Transition {
                metric: None,
                from: before,
                to: st.phase,
                message: st.message.clone(),
            });
        }
        Update {
            delete_at: delete_at(&st, spec_ttl.as_ref()),
            status: st,
            requeue_at: None,
            transitions,
            first_errors,
        }
    }
}

/// Turns a provider's answer into a measurement: the conditions decide its phase; every text
/// that ends in status has Secret values redacted.
fn measure(
    m: &ResolvedMetric,
    args: &ResolvedArgs,
    r: MeasurementResult,
    first: bool,
) -> Measurement {
    let mut metadata: BTreeMap<String, String> = r.request_metadata;
    for (k, v) in r.result.metadata {
        metadata.insert(k, args.redact(&v));
    }
    let (phase, value, message) = match (r.result.value, r.result.phase) {
        (Err(e), _) => (
            AnalysisPhase::Error,
            None,
            Some(bounded_status_text(args.redact(&e))),
        ),
        (Ok(v), Some((phase, message))) => {
            if !phase.is_completed() && !metadata.contains_key(JOB_NAME_KEY) {
                metadata.insert(LOOKED_AT_KEY.to_string(), r.finished_at.to_string());
            }
            return Measurement {
                phase,
                value: (!v.is_empty()).then(|| bounded_status_text(args.redact(&v.to_string()))),
                started_at: Some(stamp(r.started_at)),
                finished_at: phase.is_completed().then(|| stamp(r.finished_at)),
                message: message.map(|s| bounded_status_text(args.redact(&s))),
                metadata,
            };
        }
        (Ok(v), None) => {
            let verdict = m.conditions.evaluate(&v);
            if verdict.phase == AnalysisPhase::Error
                && v.is_empty()
                && first
                && !m.no_data.1.is_zero()
            {
                // No data yet (the canary has had no traffic): neither an error nor a verdict.
                let why = verdict.message.unwrap_or_default();
                metadata.insert(NO_DATA_KEY.to_string(), args.redact(&why));
                metadata.insert(LOOKED_AT_KEY.to_string(), r.finished_at.to_string());
                return Measurement {
                    phase: AnalysisPhase::Running,
                    value: Some(v.to_string()),
                    started_at: Some(stamp(r.started_at)),
                    finished_at: None,
                    message: Some(format!(
                        "no data yet (the canary may not have had traffic yet): asked again every \
                         {}s, an Error after {}s without data",
                        m.no_data.0.as_secs_f64(),
                        m.no_data.1.as_secs_f64()
                    )),
                    metadata,
                };
            }
            (
                verdict.phase,
                Some(bounded_status_text(args.redact(&v.to_string()))),
                verdict
                    .message
                    .map(|s| bounded_status_text(args.redact(&s))),
            )
        }
    };
    Measurement {
        phase,
        value,
        started_at: Some(stamp(r.started_at)),
        finished_at: Some(stamp(r.finished_at)),
        message,
        metadata,
    }
}

/// A measurement that waited for data: Error (as without waiting) once it waited `timeout`; the
/// waiting marks removed once it has a value.
fn settle_no_data(measurement: &mut Measurement, timeout: Duration, now: Timestamp) {
    if measurement.phase.is_completed() {
        measurement.metadata.remove(LOOKED_AT_KEY);
        measurement.metadata.remove(NO_DATA_KEY);
        return;
    }
    let Some(why) = measurement.metadata.get(NO_DATA_KEY).cloned() else {
        return;
    };
    let since = measurement.started_at.as_ref().map_or(now, |t| t.0);
    if now.duration_since(since).as_secs_f64() >= timeout.as_secs_f64() {
        measurement.phase = AnalysisPhase::Error;
        measurement.message = Some(bounded_status_text(format!(
            "{why} (no data for {}s)",
            timeout.as_secs_f64()
        )));
        measurement.finished_at = Some(stamp(now));
        measurement.metadata.remove(LOOKED_AT_KEY);
        measurement.metadata.remove(NO_DATA_KEY);
    }
}

/// Assesses every metric, then the run. A metric that fails, errors or is inconclusive stops the
/// run in the same pass: the other metrics count as terminated.
fn assess(
    st: &mut AnalysisRunStatus,
    metrics: &[ResolvedMetric],
    terminate: bool,
    transitions: &mut Vec<Transition>,
) {
    let phases =
        |st: &AnalysisRunStatus, terminating: bool| -> Vec<(AnalysisPhase, Option<String>)> {
            metrics
                .iter()
                .map(
                    |m| match st.metric_results.iter().find(|r| r.name == m.spec.name) {
                        Some(r) => {
                            let a = accounting::assess_metric(&m.limits, r, terminating);
                            (a.phase, a.message)
                        }
                        None if terminating => (AnalysisPhase::Successful, None),
                        None => (AnalysisPhase::Pending, None),
                    },
                )
                .collect()
        };
    let mut assessed = phases(st, terminate);
    let aborting = metrics
        .iter()
        .zip(&assessed)
        .any(|(m, (p, _))| !m.dry_run && is_abort_phase(*p));
    let terminating = terminate || aborting;
    if terminating && !terminate {
        assessed = phases(st, true);
    }
    for (m, (phase, message)) in metrics.iter().zip(&assessed) {
        if let Some(r) = st.metric_results.iter_mut().find(|r| r.name == m.spec.name) {
            if r.phase != *phase {
                if phase.is_completed() {
                    transitions.push(Transition {
                        metric: Some(r.name.clone()),
                        from: r.phase,
                        to: *phase,
                        message: message.clone(),
                    });
                }
                r.phase = *phase;
            }
            // While the metric runs, its message is the latest error's, so the reason shows in
            // the same status write as the measurement; a later good measurement clears it.
            r.message = message.clone().or_else(|| {
                r.measurements
                    .last()
                    .filter(|x| x.phase == AnalysisPhase::Error)
                    .and_then(|x| x.message.clone())
            });
        }
    }
    let views: Vec<MetricPhase<'_>> = metrics
        .iter()
        .zip(&assessed)
        .map(|(m, (p, _))| MetricPhase {
            name: &m.spec.name,
            phase: *p,
            dry_run: m.dry_run,
        })
        .collect();
    let (phase, summary, dry) = accounting::assess_run(&views, terminating);
    st.phase = phase;
    st.run_summary = Some(summary);
    st.dry_run_summary = if metrics.iter().any(|m| m.dry_run) {
        Some(dry)
    } else {
        None
    };
    // The run's message is the one of its worst deciding metric (the first, among equals).
    let worst = metrics
        .iter()
        .zip(&assessed)
        .filter(|(m, (p, _))| !m.dry_run && *p == phase && phase != AnalysisPhase::Successful)
        .find_map(|(_, (_, msg))| msg.clone());
    st.message = match (phase.is_completed(), worst, terminate) {
        (true, Some(msg), _) => Some(msg),
        (true, None, true) => Some("run terminated".to_string()),
        _ => None,
    };
}

fn delete_at(
    st: &AnalysisRunStatus,
    ttl: Option<&crate::api::analysis::TtlStrategy>,
) -> Option<Timestamp> {
    let ttl = ttl?;
    let completed = st.completed_at.as_ref()?.0;
    if !st.phase.is_completed() {
        return None;
    }
    let specific = match st.phase {
        AnalysisPhase::Successful => ttl.seconds_after_success,
        AnalysisPhase::Failed | AnalysisPhase::Error => ttl.seconds_after_failure,
        _ => None,
    };
    let secs = specific.or(ttl.seconds_after_completion)?;
    Some(add(
        completed,
        Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
    ))
}
