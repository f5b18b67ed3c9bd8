//! Validation of analysis specs (AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun) that
//! needs no cluster.
//!
//! Every rule lives here once. `sluice lint` reports every error with its field path; the
//! AnalysisRun reconciler (`analysis::run`) stops at the first and writes
//! [`SpecError::status_message`] / [`MetricError::status_message`] into the run's status, so a
//! problem caught before merge and one caught on status read the same.

use regex::Regex;

use crate::analysis::accounting::{LimitsError, MetricLimits};
use crate::analysis::condition::{Condition, ConditionError};
use k8s_openapi::api::batch::v1::JobSpec;

use crate::analysis::jsonpath::{JsonPath, JsonPathError};
use crate::api::analysis::{JobMetric, Metric, PrometheusMetric, WebMetric};
use crate::api::common::{DryRun, MeasurementRetention};

/// Providers Argo Rollouts has and Sluice does not implement, to name them in errors.
pub const KNOWN_PROVIDERS: [&str; 9] = [
    "kayenta",
    "datadog",
    "wavefront",
    "newRelic",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
];

/// The providers Sluice implements, as they are named in a metric.
pub const SUPPORTED_PROVIDERS: &str = "prometheus, web, job, judge";

/// Methods a web metric may use, as in Argo Rollouts.
pub const WEB_METHODS: [&str; 3] = ["GET", "POST", "PUT"];

/// The limit fields a [`LimitsError`] message starts with, to point at the field.
const LIMIT_FIELDS: [&str; 8] = [
    "count",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "consecutiveSuccessLimit",
    "consecutiveFailureLimit",
    "interval",
    "initialDelay",
];

/// What is wrong with one metric. [`MetricError::field`] is the path inside the metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// No provider at all.
    #[error("no provider is set (Sluice supports: prometheus, web, job, judge)")]
    NoProvider,
    /// A provider of Argo Rollouts that Sluice does not implement.
    #[error("the {0} provider is not supported by Sluice; use one of: prometheus, web, job, judge")]
    UnsupportedProvider(String),
    /// A provider nobody knows: most likely a typo.
    #[error("unknown provider (Sluice supports: prometheus, web, job, judge)")]
    UnknownProvider(String),
    /// More than one provider.
    #[error("exactly one provider must be set, found {}", .0.join(", "))]
    SeveralProviders(Vec<String>),
    /// Counts, limits or timings that do not fit together.
    #[error("{}", .0.message)]
    Limits(LimitsError),
    /// A condition that does not parse.
    #[error("`{expression}` is not a valid expression: {message}")]
    Condition {
        /// `successCondition` or `failureCondition`.
        field: &'static str,
        /// The expression as written.
        expression: String,
        /// What the parser said, on one line.
        message: String,
    },
    /// An empty Prometheus query.
    #[error("must not be empty")]
    EmptyQuery,
    /// A query the PromQL parser rejects.
    #[error("not valid PromQL: {0}")]
    InvalidPromQl(String),
    /// An address that is not an http(s) URL.
    #[error("\"{0}\" is not an http(s) URL with a host")]
    InvalidAddress(String),
    /// A negative query timeout.
    #[error("must not be negative, got {0}")]
    NegativeTimeout(i64),
    /// An authentication method Sluice does not implement.
    #[error(
        "{0} authentication is not supported by Sluice (supported: basicAuth, or an Authorization header)"
    )]
    UnsupportedAuthentication(String),
    /// Basic authentication without a user name or a password.
    #[error("needs both username and password")]
    IncompleteBasicAuth,
    /// A range query step that is not a duration.
    #[error("{step:?} is not a duration: {message}")]
    InvalidStep {
        /// The step as written.
        step: String,
        /// What the parser said.
        message: String,
    },
    /// A range query step of zero.
    #[error("must be positive")]
    ZeroStep,
    /// A web metric without a URL, or with one that is not an http(s) URL.
    #[error("\"{0}\" is not an http(s) URL with a host")]
    InvalidWebUrl(String),
    /// A web method other than GET, POST, PUT.
    #[error("\"{0}\" is not one of GET, POST, PUT")]
    InvalidWebMethod(String),
    /// Both `body` and `jsonBody`.
    #[error("use either body or jsonBody, not both")]
    BodyAndJsonBody,
    /// A body on a GET request.
    #[error("a body can only be sent with POST or PUT")]
    BodyWithGet,
    /// A `jsonPath` that does not parse.
    #[error("{0}")]
    InvalidJsonPath(String),
    /// A web metric field Sluice does not implement (`authentication`).
    #[error("is not supported by Sluice (use a header with a Secret-backed argument)")]
    UnsupportedWebField(String),
    /// A job metric whose spec is not a `batch/v1` JobSpec.
    #[error("is not a batch/v1 JobSpec: {0}")]
    InvalidJobSpec(String),
    /// A job metric whose pod template has no container.
    #[error("needs at least one container")]
    JobWithoutContainers,
    /// A judge metric's settings or queries.
    #[error("{message}")]
    InvalidJudge { field: String, message: String },
}

impl MetricError {
    /// Path of the field inside the metric (`provider.prometheus.timeout`); empty for the metric
    /// as a whole.
    pub fn field(&self) -> String {
        const P: &str = "provider.prometheus";
        match self {
            MetricError::NoProvider | MetricError::SeveralProviders(_) => "provider".into(),
            MetricError::UnsupportedProvider(p) | MetricError::UnknownProvider(p) => {
                format!("provider.{p}")
            }
            MetricError::Limits(e) => LIMIT_FIELDS
                .into_iter()
                .find(|f| e.message.starts_with(f))
                .unwrap_or_default()
                .to_string(),
            MetricError::Condition { field, .. } => (*field).to_string(),
            MetricError::EmptyQuery | MetricError::InvalidPromQl(_) => format!("{P}.query"),
            MetricError::InvalidAddress(_) => format!("{P}.address"),
            MetricError::NegativeTimeout(_) => format!("{P}.timeout"),
            MetricError::UnsupportedAuthentication(k) => format!("{P}.authentication.{k}"),
            MetricError::IncompleteBasicAuth => format!("{P}.authentication.basicAuth"),
            MetricError::InvalidStep { .. } | MetricError::ZeroStep => {
                format!("{P}.rangeQuery.step")
            }
            MetricError::InvalidWebUrl(_) => "provider.web.url".into(),
            MetricError::InvalidWebMethod(_) => "provider.web.method".into(),
            MetricError::BodyAndJsonBody | MetricError::BodyWithGet => "provider.web.body".into(),
            MetricError::InvalidJsonPath(_) => "provider.web.jsonPath".into(),
            MetricError::UnsupportedWebField(f) => format!("provider.web.{f}"),
            MetricError::InvalidJobSpec(_) => "provider.job.spec".into(),
            MetricError::JobWithoutContainers => {
                "provider.job.spec.template.spec.containers".into()
            }
            MetricError::InvalidJudge { field, .. } => field.clone(),
        }
    }

    /// `FIELD: MESSAGE`, the field inside the metric. Limits and conditions name their field
    /// in the message already.
    pub fn located(&self) -> String {
        match self {
            MetricError::Limits(e) => e.message.clone(),
            MetricError::Condition { .. } => format!("condition {self}"),
            other => format!("{}: {other}", other.field()),
        }
    }

    /// The error as an AnalysisRun's status reports it: `metric "NAME": FIELD: MESSAGE`.
    pub fn status_message(&self, metric: &str) -> String {
        format!("metric \"{metric}\": {}", self.located())
    }
}

/// What is wrong with an analysis spec as a whole. [`SpecError::field`] is the path from the
/// object (`spec.metrics[2].name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A spec without metrics (and without templates to take them from).
    #[error("at least one metric is required")]
    NoMetrics,
    /// A metric without a name.
    #[error("must not be empty")]
    EmptyMetricName {
        /// Index of the metric.
        index: usize,
    },
    /// Two metrics with the same name.
    #[error("two metrics have the same name \"{name}\"")]
    DuplicateMetricName {
        /// Index of the second one.
        index: usize,
        /// The name.
        name: String,
    },
    /// A `dryRun` or `measurementRetention` pattern that does not compile.
    #[error("not a valid regular expression: {message}")]
    InvalidPattern {
        /// `dryRun` or `measurementRetention`.
        list: &'static str,
        /// Index in the list.
        index: usize,
        /// What the regex parser said.
        message: String,
    },
    /// A pattern that matches no metric: most likely a typo.
    #[error("\"{pattern}\" matches no metric")]
    PatternMatchesNothing {
        /// `dryRun` or `measurementRetention`.
        list: &'static str,
        /// Index in the list.
        index: usize,
        /// The pattern.
        pattern: String,
    },
    /// A retention below one measurement.
    #[error("must be at least 1, got {limit}")]
    RetentionLimit {
        /// Index in `measurementRetention`.
        index: usize,
        /// The limit.
        limit: i32,
    },
}

impl SpecError {
    /// Path of the field from the object.
    pub fn field(&self) -> String {
        match self {
            SpecError::NoMetrics => "spec.metrics".into(),
            SpecError::EmptyMetricName { index } | SpecError::DuplicateMetricName { index, .. } => {
                format!("spec.metrics[{index}].name")
            }
            SpecError::InvalidPattern { list, index, .. }
            | SpecError::PatternMatchesNothing { list, index, .. } => {
                format!("spec.{list}[{index}].metricName")
            }
            SpecError::RetentionLimit { index, .. } => {
                format!("spec.measurementRetention[{index}].limit")
            }
        }
    }

    /// The error as an AnalysisRun's status reports it: `FIELD: MESSAGE`. A duplicate name is
    /// reported by the message alone, which names the metric.
    pub fn status_message(&self) -> String {
        match self {
            SpecError::DuplicateMetricName { .. } => self.to_string(),
            other => format!("{}: {other}", other.field()),
        }
    }
}

/// Checks the metric list, names, dry-run and retention entries of a spec, in the order the run
/// reports them. `includes_templates` is true for a template that includes others: it may have
/// no metrics of its own, and its patterns may match metrics of the included templates.
pub fn check_spec(
    metrics: &[Metric],
    dry_run: &[DryRun],
    measurement_retention: &[MeasurementRetention],
    includes_templates: bool,
) -> Vec<SpecError> {
    let mut errors = Vec::new();
    if metrics.is_empty() && !includes_templates {
        errors.push(SpecError::NoMetrics);
    }
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    for (index, n) in names.iter().enumerate() {
        if n.is_empty() {
            errors.push(SpecError::EmptyMetricName { index });
        } else if names[..index].contains(n) {
            errors.push(SpecError::DuplicateMetricName {
                index,
                name: n.to_string(),
            });
        }
    }
    let lists = [
        (
            "dryRun",
            dry_run.iter().map(|d| d.metric_name.as_str()).collect(),
        ),
        (
            "measurementRetention",
            measurement_retention
                .iter()
                .map(|d| d.metric_name.as_str())
                .collect::<Vec<_>>(),
        ),
    ];
    for (list, patterns) in lists {
        for (index, pattern) in patterns.into_iter().enumerate() {
            match Regex::new(pattern) {
                Err(e) => errors.push(SpecError::InvalidPattern {
                    list,
                    index,
                    message: e.to_string(),
                }),
                Ok(re) if !includes_templates && !names.iter().any(|n| re.is_match(n)) => errors
                    .push(SpecError::PatternMatchesNothing {
                        list,
                        index,
                        pattern: pattern.to_string(),
                    }),
                Ok(_) => {}
            }
        }
    }
    for (index, r) in measurement_retention.iter().enumerate() {
        if r.limit < 1 {
            errors.push(SpecError::RetentionLimit {
                index,
                limit: r.limit,
            });
        }
    }
    errors
}

/// For each pattern, the indexes of the metric names it matches (unanchored regular expression,
/// as in Argo Rollouts). A pattern that does not compile matches nothing; [`check_spec`] reports
/// it.
pub fn matched_metrics<'a>(
    patterns: impl Iterator<Item = &'a str>,
    names: &[&str],
) -> Vec<Vec<usize>> {
    patterns
        .map(|p| match Regex::new(p) {
            Ok(re) => names
                .iter()
                .enumerate()
                .filter(|(_, n)| re.is_match(n))
                .map(|(j, _)| j)
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect()
}

/// Checks that exactly one provider is set and that Sluice implements it. Runs before argument
/// substitution: the placeholders of an unsupported provider are not the problem.
pub fn check_provider(m: &Metric) -> Result<(), MetricError> {
    let mut set: Vec<&str> = [
        m.provider.prometheus.as_ref().map(|_| "prometheus"),
        m.provider.web.as_ref().map(|_| "web"),
        m.provider.job.as_ref().map(|_| "job"),
        m.provider.judge.as_ref().map(|_| "judge"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut others: Vec<&str> = m.provider.unsupported.keys().map(String::as_str).collect();
    others.sort_unstable();
    match (set.as_slice(), others.as_slice()) {
        ([_], []) => Ok(()),
        ([], []) => Err(MetricError::NoProvider),
        ([], [one]) if KNOWN_PROVIDERS.contains(one) => {
            Err(MetricError::UnsupportedProvider(one.to_string()))
        }
        ([], [one]) => Err(MetricError::UnknownProvider(one.to_string())),
        _ => {
            set.extend(others);
            Err(MetricError::SeveralProviders(
                set.into_iter().map(str::to_string).collect(),
            ))
        }
    }
}

/// A judge metric's settings, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckedJudge {
    /// The test's settings.
    pub settings: crate::analysis::judge::Settings,
    /// `deadline`, when set.
    pub deadline: Option<std::time::Duration>,
}

fn fraction(field: &str, text: Option<&str>, default: Option<f64>) -> Result<f64, String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => default.ok_or_else(|| format!("provider.judge.{field} is required")),
        Some(t) => match t.parse::<f64>() {
            Ok(x) if x > 0.0 && x < 1.0 => Ok(x),
            Ok(_) => Err(format!(
                "provider.judge.{field} {t:?} must be strictly between 0 and 1"
            )),
            Err(_) => Err(format!("provider.judge.{field} {t:?} is not a number")),
        },
    }
}

/// Checks a judge metric (after argument substitution): every query present, every fraction
/// strictly between 0 and 1, the unacceptable error rate above the acceptable one. The message
/// names the field.
pub fn check_judge(j: &crate::api::analysis::JudgeMetric) -> Result<CheckedJudge, String> {
    let mut sides = vec![("canary", Some(&j.canary))];
    sides.push(("baseline", j.baseline.as_ref()));
    for (side, q) in sides {
        let Some(q) = q else { continue };
        for (field, text) in [("requests", &q.requests), ("errors", &q.errors)] {
            if text.trim().is_empty() {
                return Err(format!(
                    "provider.judge.{side}.{field} is required (a PromQL query)"
                ));
            }
        }
    }
    let canary_latency = j
        .canary
        .latency_buckets
        .as_ref()
        .is_some_and(|l| !l.trim().is_empty());
    let baseline_latency = j
        .baseline
        .as_ref()
        .and_then(|b| b.latency_buckets.as_ref())
        .is_some_and(|l| !l.trim().is_empty());
    if canary_latency != baseline_latency {
        return Err(format!(
            "provider.judge.{}.latencyBuckets is required when the {} has one: latency is \
             compared between canary and baseline",
            if canary_latency { "baseline" } else { "canary" },
            if canary_latency { "canary" } else { "baseline" }
        ));
    }
    if j.relative_to_baseline && j.baseline.is_none() {
        return Err(
            "provider.judge.baseline is required when relativeToBaseline is true".to_string(),
        );
    }
    let p0 = fraction("acceptableErrorRate", Some(&j.acceptable_error_rate), None)?;
    let p1 = fraction(
        "unacceptableErrorRate",
        Some(&j.unacceptable_error_rate),
        None,
    )?;
    if p1 <= p0 {
        return Err(format!(
            "provider.judge.unacceptableErrorRate {p1} must be above acceptableErrorRate {p0}"
        ));
    }
    let confidence = fraction("confidence", j.confidence.as_deref(), Some(0.99))?;
    let power = fraction("power", j.power.as_deref(), Some(0.99))?;
    let floor = if canary_latency {
        Some(match j.latency_effect_floor.as_deref().map(str::trim) {
            None | Some("") => 0.1,
            Some(t) => match t.parse::<f64>() {
                Ok(x) if (0.0..0.5).contains(&x) => x,
                _ => {
                    return Err(format!(
                        "provider.judge.latencyEffectFloor {t:?} must be a number from 0 to 0.5 \
                         (excluded)"
                    ));
                }
            },
        })
    } else {
        None
    };
    let deadline = match j.deadline.as_ref().map(|d| d.parse()) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(d))) if d.is_negative() || std::time::Duration::from(d).is_zero() => {
            return Err("provider.judge.deadline must be positive".to_string());
        }
        Some(Ok(Some(d))) => Some(std::time::Duration::from(d)),
        Some(Err(e)) => return Err(format!("provider.judge.deadline: {e}")),
    };
    Ok(CheckedJudge {
        settings: crate::analysis::judge::Settings {
            sprt: crate::analysis::judge::Sprt {
                p0,
                p1,
                alpha: 1.0 - confidence,
                beta: 1.0 - power,
            },
            relative: j.relative_to_baseline,
            latency_floor: floor,
        },
        deadline,
    })
}

/// Checks what the controller needs to send a web request (after argument substitution), in
/// the order the run reports them. The allowlist is the controller's to check.
pub fn check_web(w: &WebMetric) -> Vec<MetricError> {
    let mut errors = Vec::new();
    for k in w.unsupported.keys() {
        errors.push(MetricError::UnsupportedWebField(k.clone()));
    }
    match url::Url::parse(w.url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => errors.push(MetricError::InvalidWebUrl(w.url.clone())),
    }
    let method = web_method(w);
    if !WEB_METHODS.contains(&method.as_str()) {
        errors.push(MetricError::InvalidWebMethod(method.clone()));
    }
    let has_body = w.body.as_deref().is_some_and(|b| !b.is_empty());
    if has_body && w.json_body.is_some() {
        errors.push(MetricError::BodyAndJsonBody);
    } else if (has_body || w.json_body.is_some()) && method == "GET" {
        errors.push(MetricError::BodyWithGet);
    }
    if let Err(e) = web_json_path(w) {
        errors.push(MetricError::InvalidJsonPath(e.to_string()));
    }
    errors
}

/// The method of a web metric, upper case; GET when omitted.
pub fn web_method(w: &WebMetric) -> String {
    w.method
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .map_or_else(|| "GET".to_string(), |m| m.trim().to_ascii_uppercase())
}

/// The JSONPath of a web metric; the whole document when omitted.
pub fn web_json_path(w: &WebMetric) -> Result<JsonPath, JsonPathError> {
    match w.json_path.as_deref().filter(|p| !p.trim().is_empty()) {
        None => Ok(JsonPath::whole_document()),
        Some(p) => JsonPath::parse(p),
    }
}

/// Checks that a job metric's spec (after argument substitution) decodes as a `batch/v1`
/// JobSpec with at least one container, and returns it.
pub fn check_job(j: &JobMetric) -> Result<JobSpec, MetricError> {
    let spec: JobSpec = serde_json::from_value(j.spec.clone())
        .map_err(|e| MetricError::InvalidJobSpec(e.to_string()))?;
    if spec
        .template
        .spec
        .as_ref()
        .is_none_or(|p| p.containers.is_empty())
    {
        return Err(MetricError::JobWithoutContainers);
    }
    Ok(spec)
}

/// Checks counts, limits and timings (after argument substitution).
pub fn check_limits(m: &Metric) -> Result<MetricLimits, MetricError> {
    MetricLimits::from_metric(m).map_err(MetricError::Limits)
}

/// Checks that both conditions parse (after argument substitution).
pub fn check_conditions(m: &Metric) -> Vec<MetricError> {
    [
        (&m.success_condition, "successCondition"),
        (&m.failure_condition, "failureCondition"),
    ]
    .into_iter()
    .filter_map(|(cond, field)| {
        let c = cond.as_deref().filter(|c| !c.trim().is_empty())?;
        match Condition::compile(c) {
            Ok(_) => None,
            Err(ConditionError::Syntax {
                expression,
                message,
            }) => Some(MetricError::Condition {
                field,
                expression,
                message,
            }),
            // Compiling reports syntax only; evaluation errors come with a value.
            Err(_) => None,
        }
    })
    .collect()
}

/// Checks what the controller needs to send a Prometheus query (after argument substitution),
/// in the order the run reports them.
pub fn check_prometheus(p: &PrometheusMetric) -> Vec<MetricError> {
    let mut errors = Vec::new();
    if p.query.trim().is_empty() {
        errors.push(MetricError::EmptyQuery);
    }
    if let Some(t) = p.timeout
        && t < 0
    {
        errors.push(MetricError::NegativeTimeout(t));
    }
    if let Some(auth) = &p.authentication {
        // BTreeMap: sorted, so the first reported is stable.
        for k in auth.unsupported.keys() {
            errors.push(MetricError::UnsupportedAuthentication(k.clone()));
        }
        if let Some(b) = &auth.basic_auth
            && (b.username.is_empty() || b.password.is_empty())
        {
            errors.push(MetricError::IncompleteBasicAuth);
        }
    }
    if let Some(r) = &p.range_query {
        match r.step.parse::<kube::core::Duration>() {
            Err(e) => errors.push(MetricError::InvalidStep {
                step: r.step.clone(),
                message: e.to_string(),
            }),
            Ok(step) if std::time::Duration::from(step).is_zero() => {
                errors.push(MetricError::ZeroStep)
            }
            Ok(_) => {}
        }
    }
    errors
}

/// Checks a query and an address without sending anything: the PromQL parses and the address
/// is an http(s) URL. Only `sluice lint` runs these: at run time the Prometheus server's answer
/// is the authority, and a refused query counts as an errored measurement.
pub fn check_prometheus_offline(p: &PrometheusMetric) -> Vec<MetricError> {
    let mut errors = Vec::new();
    if !p.query.trim().is_empty()
        && let Err(e) = promql_parser::parser::parse(&p.query)
    {
        errors.push(MetricError::InvalidPromQl(
            e.split_whitespace().collect::<Vec<_>>().join(" "),
        ));
    }
    if let Some(address) = &p.address
        && !address.trim().is_empty()
    {
        match url::Url::parse(address) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => errors.push(MetricError::InvalidAddress(address.clone())),
        }
    }
    errors
}

/// Every check of one metric whose arguments are substituted, as lint runs them: limits,
/// conditions, the Prometheus request and the offline query checks.
pub fn check_metric(m: &Metric) -> Vec<MetricError> {
    let mut errors = Vec::new();
    if let Err(e) = check_limits(m) {
        errors.push(e);
    }
    errors.extend(check_conditions(m));
    if let Some(p) = &m.provider.prometheus {
        errors.extend(check_prometheus(p));
        errors.extend(check_prometheus_offline(p));
    }
    if let Some(w) = &m.provider.web {
        errors.extend(check_web(w));
    }
    if let Some(j) = &m.provider.job
        && let Err(e) = check_job(j)
    {
        errors.push(e);
    }
    if let Some(j) = &m.provider.judge
        && let Err(e) = check_judge(j)
    {
        // `check_judge` starts its message with the field, as the run reports it.
        let (field, message) = match e.split_once(' ') {
            Some((f, rest)) if f.starts_with("provider.judge") => {
                (f.trim_end_matches(':').to_string(), rest.to_string())
            }
            _ => ("provider.judge".to_string(), e),
        };
        errors.push(MetricError::InvalidJudge { field, message });
    }
    errors
}
