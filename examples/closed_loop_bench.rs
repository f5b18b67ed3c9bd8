//! Blast radius and reaction of the analysis through the local closed loop, against the
//! statistical limit.
//!
//! `cargo run --release --example closed_loop_bench [-- RUNS [GOOD_RUNS [SCENARIOS [METHODS]]]]`
//! (default 3 runs per bad scenario, 5 good-version runs per method, every scenario and method;
//! `SCENARIOS` is a comma list of `errors30,errors5,latency300,good`, `METHODS` of
//! `classic,judge`). A new version is rolled out behind a real nginx at
//! 50 requests/s, first step 10%, judged either by the classic templates (`nginx-success-rate` and
//! `nginx-latency`, every 5 s, 10 s windows) or by the sequential `nginx-judge` (a look every
//! second; acceptable error rate 1%, unacceptable 5%, α = β = 1%). Per scenario and method:
//! - blast radius: requests the new version served, and how many of them failed;
//! - time from the canary's first request to the decision (the run seen completed);
//! - the reaction, part by part: decision → canary weight 0 written to the Ingress → Rollout
//!   status shows the abort, and decision → last request nginx sent to the canary;
//! - the statistical minimum: the expected number of canary requests a sequential probability
//!   ratio test needs at the true error rate with the judge's α, β and thresholds (Wald's
//!   approximation), plus the requests in flight during a 1 s reaction;
//! - for the good version: how many runs were wrongly aborted, and the false-abort rate of the
//!   judge's test over 100,000 simulated good canaries.

use std::time::{Duration, Instant};

use kube::api::Api;
use serde_json::Value;
use sluice::analysis::judge::{Decision, Sprt};
use sluice::api::analysis::AnalysisRun;
use sluice::demo::stack::{LocalStack, nginx_app, rollout_yaml, template};
use sluice_e2e::demo_app::{ERROR_RATIO, LATENCY};
use sluice_e2e::loadgen::split_of;

const NS: &str = "default";
const RATE: u32 = 50;
const WEIGHT: f64 = 0.10;
/// The judge template's settings.
const JUDGE: Sprt = Sprt {
    p0: 0.01,
    p1: 0.05,
    alpha: 0.01,
    beta: 0.01,
};

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Classic,
    Judge,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Classic => "classic",
            Method::Judge => "judge",
        }
    }

    fn steps(self) -> String {
        let analysis = match self {
            Method::Classic => {
                "      - analysis:
          templates: [{templateName: nginx-success-rate}, {templateName: nginx-latency}]
          args:
          - {name: namespace, value: default}
          - {name: ingress, value: web}
          - {name: service, value: web-canary}
          - {name: window, value: 10s}
          - {name: count, value: \"3\"}
          - {name: p95-threshold, value: \"0.2\"}
          - {name: p99-threshold, value: \"0.5\"}
"
            }
            Method::Judge => {
                "      - analysis:
          templates: [{templateName: nginx-judge}]
          args:
          - {name: namespace, value: default}
          - {name: ingress, value: web}
          - {name: service, value: web-canary}
"
            }
        };
        format!(
            "      canaryService: web-canary
      stableService: web-stable
      scaleDownDelaySeconds: 2
      abortScaleDownDelaySeconds: 2
      trafficRouting:
        nginx: {{stableIngress: web}}
      steps:
      - setWeight: 10
{analysis}      - setWeight: 50
      - pause: {{duration: 5s}}
"
        )
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    error_ratio: f64,
    latency: Option<&'static str>,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "errors30",
        error_ratio: 0.3,
        latency: None,
    },
    Scenario {
        name: "errors5",
        error_ratio: 0.05,
        latency: None,
    },
    Scenario {
        name: "latency300",
        error_ratio: 0.0,
        latency: Some("300ms"),
    },
    Scenario {
        name: "good",
        error_ratio: 0.0,
        latency: None,
    },
];

impl Scenario {
    fn bad(&self) -> bool {
        self.name != "good"
    }

    /// Expected canary requests of the statistical limit, and what it is.
    fn minimum(&self) -> (f64, &'static str) {
        if self.latency.is_some() {
            // Every canary request slower than every stable one: the normal approximation of U
            // passes the first look's level (α·6/π²) with 3 canary requests.
            (3.0, "U test, complete separation")
        } else if self.bad() {
            (JUDGE.expected_sample_number(self.error_ratio), "SPRT ASN")
        } else {
            // Requests without a failure to reach the pass boundary.
            (
                (JUDGE.lower() / ((1.0 - JUDGE.p1) / (1.0 - JUDGE.p0)).ln()).ceil(),
                "SPRT, to pass",
            )
        }
    }
}

fn judge_template() -> anyhow::Result<Value> {
    Ok(serde_yaml::from_str(include_str!(
        "../analysis-templates/nginx-judge.yaml"
    ))?)
}

struct Run {
    aborted: bool,
    served: usize,
    failed: usize,
    /// Canary's first request → the run seen completed.
    to_decision: Option<Duration>,
    /// Decision → canary weight 0 seen on the canary Ingress.
    to_weight_write: Option<Duration>,
    /// Decision → the Rollout's status seen aborted.
    to_status_write: Option<Duration>,
    /// Decision → last request to the canary (negative: before the decision was seen).
    to_last_request: Option<f64>,
    verdict: String,
}

async fn canary_weight_zero(stack: &LocalStack) -> bool {
    let api: Api<k8s_openapi::api::networking::v1::Ingress> = Api::namespaced(stack.client(), NS);
    let Ok(list) = api.list(&Default::default()).await else {
        return false;
    };
    list.items.iter().any(|i| {
        let a = i.metadata.annotations.clone().unwrap_or_default();
        a.get("nginx.ingress.kubernetes.io/canary")
            .map(String::as_str)
            == Some("true")
            && a.get("nginx.ingress.kubernetes.io/canary-weight")
                .map(String::as_str)
                == Some("0")
    })
}

async fn one_run(method: Method, s: Scenario) -> anyhow::Result<Run> {
    let stack = LocalStack::start().await?;
    stack.apply_yaml(&nginx_app(NS)).await?;
    stack
        .apply(template("nginx-success-rate", "5s", None)?)
        .await?;
    stack.apply(template("nginx-latency", "5s", None)?).await?;
    stack.apply(judge_template()?).await?;
    let steps = method.steps();
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v1", &[], &steps))
        .await?;
    let healthy = |r: &sluice::api::rollout::Rollout| {
        r.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.as_str() == "Healthy")
    };
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), healthy)
        .await?;
    let load = stack.load("web.example", RATE);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        let w = load.between(now - Duration::from_secs(2), now - Duration::from_secs(1));
        if !w.is_empty() && w.iter().all(|x| x.version == "v1" && !x.failed()) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "nginx never served v1");
    }
    let started = Instant::now();
    let ratio = s.error_ratio.to_string();
    let mut annotations: Vec<(&str, &str)> = Vec::new();
    if s.error_ratio > 0.0 {
        annotations.push((ERROR_RATIO, &ratio));
    }
    if let Some(l) = s.latency {
        annotations.push((LATENCY, l));
    }
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &annotations, &steps))
        .await?;
    let runs: Api<AnalysisRun> = Api::namespaced(stack.client(), NS);
    let (mut decided, mut weight_zero, mut status_aborted) = (None, None, None);
    let mut verdict = String::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    let aborted = loop {
        if decided.is_none()
            && let Ok(list) = runs.list(&Default::default()).await
            && let Some(done) = list.items.iter().find_map(|r| {
                let st = r.status.as_ref()?;
                st.phase.is_completed().then(|| {
                    format!(
                        "{} {}",
                        st.phase.as_str(),
                        st.message.clone().unwrap_or_default()
                    )
                })
            })
        {
            decided = Some(Instant::now());
            verdict = done;
        }
        if decided.is_some() && weight_zero.is_none() && canary_weight_zero(&stack).await {
            weight_zero = Some(Instant::now());
        }
        let r = stack.rollout(NS, "web").await?;
        let st = r.status.clone().unwrap_or_default();
        if st.abort && status_aborted.is_none() {
            status_aborted = Some(Instant::now());
        }
        let degraded = st.phase.is_some_and(|p| p.as_str() == "Degraded");
        if degraded && weight_zero.is_some() && status_aborted.is_some() {
            break true;
        }
        if st.phase.is_some_and(|p| p.as_str() == "Healthy")
            && st.stable_rs.is_some()
            && st.stable_rs == st.current_pod_hash
            && decided.is_some()
        {
            break false;
        }
        anyhow::ensure!(Instant::now() < deadline, "no outcome: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = load.between(started, Instant::now());
    let split = split_of(&samples, "v2");
    let canary: Vec<_> = samples.iter().filter(|x| x.version == "v2").collect();
    let first = canary.iter().map(|x| x.sent).min();
    let last = canary.iter().map(|x| x.sent).max();
    let since = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
        _ => None,
    };
    let signed = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) if b >= a => Some(b.duration_since(a).as_secs_f64()),
        (Some(a), Some(b)) => Some(-a.duration_since(b).as_secs_f64()),
        _ => None,
    };
    Ok(Run {
        aborted,
        served: split.version,
        failed: split.version_failed,
        to_decision: since(first, decided),
        to_weight_write: if aborted {
            since(decided, weight_zero)
        } else {
            None
        },
        to_status_write: if aborted {
            since(decided, status_aborted)
        } else {
            None
        },
        to_last_request: if aborted { signed(decided, last) } else { None },
        verdict,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2}s", d.as_secs_f64()))
}

fn opt(x: Option<f64>, unit: &str) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}{unit}"))
}

/// Share of simulated good canaries (at the acceptable rate itself, the worst good case) the
/// judge's error test fails, looking after every 1 to 8 requests.
fn simulated_false_aborts(runs: u64) -> f64 {
    let mut state: u64 = 0x5EED;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut failed = 0;
    for _ in 0..runs {
        let (mut n, mut k) = (0u64, 0u64);
        loop {
            for _ in 0..1 + next() % 8 {
                n += 1;
                if ((next() >> 11) as f64 / (1u64 << 53) as f64) < JUDGE.p0 {
                    k += 1;
                }
            }
            match JUDGE.evaluate(n, k).decision {
                Decision::Continue if n < 100_000 => {}
                Decision::Worse => {
                    failed += 1;
                    break;
                }
                _ => break,
            }
        }
    }
    failed as f64 / runs as f64
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut argv = std::env::args().skip(1);
    let runs: usize = argv.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let good_runs: usize = argv.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let wanted: Option<Vec<String>> = argv
        .next()
        .map(|a| a.split(',').map(str::to_string).collect());
    let methods: Vec<Method> = match argv.next() {
        None => vec![Method::Classic, Method::Judge],
        Some(a) => [Method::Classic, Method::Judge]
            .into_iter()
            .filter(|m| a.split(',').any(|x| x == m.name()))
            .collect(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    println!(
        "{RATE} req/s, first step {:.0}%; classic: nginx-success-rate + nginx-latency every 5s \
         (10s windows, 3 measurements); judge: nginx-judge, a look every 1s, acceptable {}% \
         unacceptable {}% errors, alpha {} beta {}",
        WEIGHT * 100.0,
        JUDGE.p0 * 100.0,
        JUDGE.p1 * 100.0,
        JUDGE.alpha,
        JUDGE.beta
    );
    let in_flight = WEIGHT * f64::from(RATE);
    for s in SCENARIOS {
        if wanted
            .as_ref()
            .is_some_and(|w| !w.iter().any(|x| x == s.name))
        {
            continue;
        }
        let (min, what) = s.minimum();
        println!(
            "\n== {} (error ratio {}, latency {}): statistical minimum {:.1} canary requests ({what}), \
             {:.1} with a 1s reaction",
            s.name,
            s.error_ratio,
            s.latency.unwrap_or("+0"),
            min,
            min + in_flight
        );
        let n = if s.bad() { runs } else { good_runs };
        for &method in &methods {
            let mut results = Vec::new();
            for i in 0..n {
                let r = rt.block_on(one_run(method, s))?;
                println!(
                    "  {:<7} run {}: {} served {:>3} failed {:>3} first request->decision {} \
                     decision->weight 0 {} decision->status {} decision->last canary request {} \
                     | {}",
                    method.name(),
                    i + 1,
                    if r.aborted { "ABORTED " } else { "promoted" },
                    r.served,
                    r.failed,
                    secs(r.to_decision),
                    secs(r.to_weight_write),
                    secs(r.to_status_write),
                    opt(r.to_last_request, "s"),
                    r.verdict.chars().take(160).collect::<String>()
                );
                results.push(r);
            }
            let aborted = results.iter().filter(|r| r.aborted).count();
            let served = median(results.iter().map(|r| r.served as f64).collect());
            println!(
                "  {:<7} median of {n}: served {} failed {} first request->decision {} \
                 decision->last canary request {}; {}/{n} aborted; served/minimum {}",
                method.name(),
                opt(served, ""),
                opt(
                    median(results.iter().map(|r| r.failed as f64).collect()),
                    ""
                ),
                opt(
                    median(
                        results
                            .iter()
                            .filter_map(|r| r.to_decision.map(|d| d.as_secs_f64()))
                            .collect()
                    ),
                    "s"
                ),
                opt(
                    median(results.iter().filter_map(|r| r.to_last_request).collect()),
                    "s"
                ),
                aborted,
                served.map_or("-".into(), |x| format!("{:.2}x", x / min))
            );
        }
    }
    let sims = 100_000;
    println!(
        "\njudge error test over {sims} simulated good canaries at the acceptable rate itself: \
         false-abort rate {:.5} (alpha {})",
        simulated_false_aborts(sims),
        JUDGE.alpha
    );
    Ok(())
}
