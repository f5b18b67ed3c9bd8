//! `sluice demo`: the real closed loop on this machine. A sample app behind a real nginx, a real
//! Prometheus, the controller; a good version is rolled out and promoted, then a bad one (30%
//! errors) is aborted by its analysis, live in the terminal, with the blast radius at the end.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use sluice_e2e::demo_app::{ERROR_RATIO, LATENCY};
use sluice_e2e::loadgen::{LoadGenerator, split_of};

use super::stack::{LocalStack, nginx_app, rollout_yaml, template};
use crate::analysis::args::ResolvedArgs;
use crate::api::analysis::AnalysisRun;

/// Namespace of the sample app.
pub const NS: &str = "demo";
/// Host of the sample app's Ingress.
pub const HOST: &str = "web.example";

/// Options of the live demo.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Requests per second sent through nginx.
    pub rate: u32,
    /// Keep everything running at the end until Ctrl-C.
    pub keep: bool,
    /// Where to write the kubeconfig of the local cluster.
    pub kubeconfig: Option<PathBuf>,
}

fn steps() -> String {
    let analysis = "      - analysis:
          templates: [{templateName: nginx-success-rate}, {templateName: nginx-latency}]
          args:
          - {name: namespace, value: demo}
          - {name: ingress, value: web}
          - {name: service, value: web-canary}
          - {name: window, value: 5s}
          - {name: count, value: \"2\"}
          - {name: success-rate, value: \"0.95\"}
          - {name: p95-threshold, value: \"0.25\"}
          - {name: p99-threshold, value: \"0.5\"}
";
    format!(
        "      canaryService: web-canary
      stableService: web-stable
      scaleDownDelaySeconds: 3
      abortScaleDownDelaySeconds: 3
      trafficRouting:
        nginx: {{stableIngress: web}}
      steps:
      - setWeight: 10
{analysis}      - setWeight: 25
{analysis}      - setWeight: 50
{analysis}      - setWeight: 100
"
    )
}

const STEP_NAMES: &[&str] = &[
    "setWeight 10",
    "analysis",
    "setWeight 25",
    "analysis",
    "setWeight 50",
    "analysis",
    "setWeight 100",
];

/// The latest analysis values of the newest AnalysisRun: `metric=value (condition) phase`.
async fn analysis_line(stack: &LocalStack) -> String {
    let api: Api<AnalysisRun> = Api::namespaced(stack.client(), NS);
    let Ok(list) = api.list(&Default::default()).await else {
        return String::new();
    };
    let Some(run) = list
        .items
        .iter()
        .max_by_key(|r| r.creation_timestamp().map(|t| t.0))
    else {
        return String::new();
    };
    let Some(status) = run.status.as_ref() else {
        return String::new();
    };
    let args = ResolvedArgs::resolve(&run.spec.args, &Default::default()).unwrap_or_default();
    let conditions: std::collections::BTreeMap<&str, &str> = run
        .spec
        .metrics
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.success_condition.as_deref().unwrap_or(""),
            )
        })
        .collect();
    status
        .metric_results
        .iter()
        .map(|m| {
            let last = m.measurements.last();
            let value = last
                .and_then(|x| x.value.clone())
                .map(|v| {
                    v.trim_matches(|c| c == '[' || c == ']')
                        .parse::<f64>()
                        .map_or(v.clone(), |f| format!("{f:.3}"))
                })
                .unwrap_or_else(|| "-".into());
            let cond = conditions.get(m.name.as_str()).copied().unwrap_or("");
            let cond = args
                .substitute(cond, "successCondition")
                .unwrap_or_else(|_| cond.to_string())
                .replace("result[0]", "x");
            format!("{}={value} [{cond}] {}", m.name, m.phase.as_str())
        })
        .collect::<Vec<_>>()
        .join("  ")
}

struct Outcome {
    /// Requests the new version served, and how many of them failed.
    served: usize,
    failed: usize,
    total: usize,
    /// First Prometheus scrape showing a canary 5xx, to the last request nginx sent to it.
    abort_latency: Option<Duration>,
    phase: String,
    message: String,
}

/// Rolls out `version` and shows it live until the Rollout is Healthy on it or aborted.
async fn roll_out(
    out: &mut dyn Write,
    stack: &LocalStack,
    load: &LoadGenerator,
    version: &str,
    annotations: &[(&str, &str)],
) -> anyhow::Result<Outcome> {
    let before = stack
        .rollout(NS, "web")
        .await?
        .status
        .and_then(|s| s.stable_rs);
    let started = Instant::now();
    stack
        .apply_yaml(&rollout_yaml(NS, 5, version, annotations, &steps()))
        .await?;
    let mut last_line = String::new();
    let mut first_visible_failure: Option<Instant> = None;
    let mut last_phase = String::new();
    let deadline = started + Duration::from_secs(240);
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let r = stack.rollout(NS, "web").await?;
        let st = r.status.clone().unwrap_or_default();
        let phase = st.phase.map_or("", |p| p.as_str()).to_string();
        let weight = st.canary.weights.as_ref().map_or(0, |w| w.canary.weight);
        let step = st.current_step_index.unwrap_or(0);
        let now = Instant::now();
        let recent = load.between(now - Duration::from_secs(3), now - Duration::from_secs(1));
        let split = split_of(&recent, version);
        if first_visible_failure.is_none()
            && stack
                .prometheus
                .query("sum(nginx_ingress_controller_requests{namespace=\"demo\",canary!=\"\",status=~\"5..\"})")
                .await
                .is_ok_and(|v| v.first().is_some_and(|x| *x > 0.0))
        {
            first_visible_failure = Some(now);
        }
        let step_name = STEP_NAMES
            .get(usize::try_from(step).unwrap_or(0))
            .copied()
            .unwrap_or("complete");
        let line = format!(
            "[{:>5.1}s] {phase:<11} step {}/{} {step_name:<13} weight {weight:>3}/{:<3} measured {version} {:>5.1}% ({} req, {} failed)  {}",
            started.elapsed().as_secs_f64(),
            (step + 1).min(STEP_NAMES.len() as i32),
            STEP_NAMES.len(),
            100 - weight,
            split.percent(),
            split.total,
            recent.iter().filter(|s| s.failed()).count(),
            analysis_line(stack).await,
        );
        if line != last_line {
            writeln!(out, "{line}")?;
            last_line = line;
        }
        if phase != last_phase {
            if let Some(m) = st.message.as_deref().filter(|m| !m.is_empty()) {
                writeln!(out, "          decision: {phase}: {m}")?;
            }
            last_phase = phase.clone();
        }
        let promoted = phase == "Healthy"
            && st.stable_rs.is_some()
            && st.stable_rs != before
            && st.stable_rs == st.current_pod_hash;
        let aborted = phase == "Degraded" && weight == 0;
        if promoted || aborted {
            // Let in-flight requests and the last nginx reload settle before counting.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let samples = load.between(started, Instant::now());
            let blast = split_of(&samples, version);
            let last_canary = samples
                .iter()
                .filter(|s| s.version == version)
                .map(|s| s.sent)
                .max();
            let abort_latency = match (aborted, first_visible_failure, last_canary) {
                (true, Some(v), Some(l)) => Some(l.saturating_duration_since(v)),
                _ => None,
            };
            return Ok(Outcome {
                served: blast.version,
                failed: blast.version_failed,
                total: blast.total,
                abort_latency,
                phase,
                message: st.message.unwrap_or_default(),
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rollout of {version} did not finish in time: {st:?}"
        );
    }
}

/// Runs the live demo.
pub async fn run(out: &mut dyn Write, options: LiveOptions) -> anyhow::Result<()> {
    writeln!(
        out,
        "Starting the local cluster: API server, controller, nginx, Prometheus (installed with apt-get when missing)..."
    )?;
    let stack = LocalStack::start().await?;
    let kubeconfig = options
        .kubeconfig
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-demo.kubeconfig"));
    stack.cluster.write_kubeconfig(&kubeconfig)?;
    writeln!(
        out,
        "  API server   {}\n  nginx        http://{} (Host: {HOST})\n  Prometheus   {}\n  kubeconfig   {}",
        stack.cluster.url(),
        stack.dataplane.ingress_addr(),
        stack.prometheus.url(),
        kubeconfig.display()
    )?;
    stack.apply_yaml(&nginx_app(NS)).await?;
    for name in ["nginx-success-rate", "nginx-latency"] {
        let mut t = template(name, "2s", Some("3s"))?;
        t["metadata"]["namespace"] = NS.into();
        stack.apply(t).await?;
    }
    stack
        .apply_yaml(&rollout_yaml(NS, 5, "v1", &[], &steps()))
        .await?;
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.as_str() == "Healthy")
        })
        .await?;
    let load = stack.load(HOST, options.rate);
    stack.dataplane.wait_synced(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    writeln!(
        out,
        "web:v1 is live (5 pods), {} requests/s through nginx.\n",
        options.rate
    )?;

    writeln!(
        out,
        "== Rolling out web:v2 (healthy): steps 10% / 25% / 50% / 100%, analysis after each =="
    )?;
    let good = roll_out(out, &stack, &load, "v2", &[(LATENCY, "2ms")]).await?;
    writeln!(
        out,
        "=> {}: v2 served {} of {} requests during the rollout, {} failed\n",
        if good.phase == "Healthy" {
            "promoted"
        } else {
            "NOT promoted"
        },
        good.served,
        good.total,
        good.failed
    )?;

    writeln!(
        out,
        "== Rolling out web:v3 (bad: 30% of its answers are 500s) =="
    )?;
    let bad = roll_out(out, &stack, &load, "v3", &[(ERROR_RATIO, "0.3")]).await?;
    writeln!(
        out,
        "=> {}: {}",
        if bad.phase == "Degraded" {
            "aborted by analysis, traffic back on v2"
        } else {
            "NOT aborted"
        },
        bad.message
    )?;
    writeln!(out, "\nSummary")?;
    writeln!(
        out,
        "  good version v2: {} ({} requests served by it, {} failed)",
        good.phase, good.served, good.failed
    )?;
    writeln!(
        out,
        "  bad version v3:  blast radius {} of {} requests served by v3 during its rollout, {} of them failed",
        bad.served, bad.total, bad.failed
    )?;
    match bad.abort_latency {
        Some(l) => writeln!(
            out,
            "  abort latency:   {:.1}s from the first scrape showing a canary error to the last request nginx sent to v3",
            l.as_secs_f64()
        )?,
        None => writeln!(out, "  abort latency:   not measured")?,
    }
    writeln!(
        out,
        "\nExplore it:\n  export KUBECONFIG={}\n  kubectl get rollouts,analysisruns,pods -n {NS}\n  sluice get rollout web -n {NS}\n  curl -H 'Host: {HOST}' http://{}/\n  Prometheus: {}/graph?g0.expr=nginx_ingress_controller_requests",
        kubeconfig.display(),
        stack.dataplane.ingress_addr(),
        stack.prometheus.url()
    )?;
    if options.keep {
        writeln!(out, "\nEverything keeps running; Ctrl-C stops it.")?;
        out.flush()?;
        tokio::signal::ctrl_c().await?;
    }
    load.stop();
    Ok(())
}
