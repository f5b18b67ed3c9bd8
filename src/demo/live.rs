//! `sluice demo`: the real closed loop on this machine. A sample app behind a real nginx, a real
//! Prometheus, the controller; a good version is rolled out and promoted, then a bad one (30%
//! errors) is aborted by its analysis, live in the terminal, with the blast radius at the end.
//!
//! The traffic router is an NGINX Ingress (ingress-nginx's canary annotations, the default: most
//! clusters that run Sluice's NGINX router still run ingress-nginx) or, with
//! `--router gateway-api`, a Gateway API HTTPRoute whose backendRef weights nginx follows the
//! way NGINX Gateway Fabric renders them.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use sluice_e2e::demo_app::{ERROR_RATIO, LATENCY};
use sluice_e2e::loadgen::{LoadGenerator, split_of};

use super::stack::{LocalStack, Progress, gateway_app, nginx_app, rollout_yaml, template};
use crate::analysis::args::ResolvedArgs;
use crate::api::analysis::AnalysisRun;
use crate::api::rollout::Rollout;
use crate::plan::describe_step;

/// Namespace of the sample app.
pub const NS: &str = "demo";
/// Host of the sample app's Ingress.
pub const HOST: &str = "web.example";

/// The traffic router of the live demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DemoRouter {
    /// The Ingress `web` with ingress-nginx's canary annotations (`trafficRouting.nginx`).
    #[default]
    IngressNginx,
    /// The HTTPRoute `web`: the weights of its backendRefs (`trafficRouting.gatewayAPI`).
    GatewayApi,
}

impl DemoRouter {
    /// The AnalysisTemplates of the analysis steps.
    fn templates(self) -> [&'static str; 2] {
        match self {
            DemoRouter::IngressNginx => ["nginx-success-rate", "nginx-latency"],
            DemoRouter::GatewayApi => ["gateway-api-success-rate", "gateway-api-latency"],
        }
    }

    /// The argument naming the routing object in those templates.
    fn object_arg(self) -> &'static str {
        match self {
            DemoRouter::IngressNginx => "ingress",
            DemoRouter::GatewayApi => "route",
        }
    }

    /// `trafficRouting`, indented under it.
    fn routing(self) -> &'static str {
        match self {
            DemoRouter::IngressNginx => "nginx: {stableIngress: web}",
            DemoRouter::GatewayApi => "gatewayAPI: {httpRoute: web}",
        }
    }

    /// The `router` line of the summary.
    fn describe(self) -> String {
        match self {
            DemoRouter::IngressNginx => format!(
                "NGINX: the Ingress web (host {HOST}) sends the canary weight to the Service web-canary,
            the rest to web-stable (--router gateway-api: the same through a Gateway API HTTPRoute)"
            ),
            DemoRouter::GatewayApi => format!(
                "Gateway API: the HTTPRoute web (host {HOST}); its rule's backendRefs web-canary and
            web-stable get the canary and stable weights, which nginx follows as NGINX Gateway Fabric does"
            ),
        }
    }

    /// PromQL: canary 5xx answers so far.
    fn canary_errors(self) -> String {
        match self {
            DemoRouter::IngressNginx => format!(
                "sum(nginx_ingress_controller_requests{{namespace=\"{NS}\",canary!=\"\",status=~\"5..\"}})"
            ),
            DemoRouter::GatewayApi => format!(
                "sum(gateway_api_http_requests_total{{route_namespace=\"{NS}\",backend_name=\"web-canary\",response_code=~\"5..\"}})"
            ),
        }
    }

    /// The metric the explore hint links to in Prometheus.
    fn metric(self) -> &'static str {
        match self {
            DemoRouter::IngressNginx => "nginx_ingress_controller_requests",
            DemoRouter::GatewayApi => "gateway_api_http_requests_total",
        }
    }
}

/// Options of the live demo.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The traffic router.
    pub router: DemoRouter,
    /// Requests per second sent through nginx.
    pub rate: u32,
    /// Keep everything running at the end until Ctrl-C.
    pub keep: bool,
    /// Where to write the kubeconfig of the local cluster.
    pub kubeconfig: Option<PathBuf>,
}

/// The analysis arguments of every analysis step: what the summary printed before the first
/// update says, so it is written once.
const SUCCESS_RATE: &str = "0.95";
const P95: &str = "0.25";
const P99: &str = "0.5";
const COUNT: &str = "2";
const WINDOW: &str = "5s";
/// Every metric's `interval` and `initialDelay` in the demo (the shipped templates say 30 s).
const INTERVAL: &str = "2s";
const INITIAL_DELAY: &str = "3s";
/// The window (seconds before now) over which each line measures the traffic: it ends a second
/// ago so that the answers to the requests in it have arrived.
const SPLIT_FROM: Duration = Duration::from_secs(3);
const SPLIT_TO: Duration = Duration::from_secs(1);

fn steps(router: DemoRouter) -> String {
    let [success, latency] = router.templates();
    let object = router.object_arg();
    let routing = router.routing();
    let analysis = format!(
        "      - analysis:
          templates: [{{templateName: {success}}}, {{templateName: {latency}}}]
          args:
          - {{name: namespace, value: {NS}}}
          - {{name: {object}, value: web}}
          - {{name: service, value: web-canary}}
          - {{name: window, value: {WINDOW}}}
          - {{name: count, value: \"{COUNT}\"}}
          - {{name: success-rate, value: \"{SUCCESS_RATE}\"}}
          - {{name: p95-threshold, value: \"{P95}\"}}
          - {{name: p99-threshold, value: \"{P99}\"}}
"
    );
    format!(
        "      canaryService: web-canary
      stableService: web-stable
      scaleDownDelaySeconds: 3
      abortScaleDownDelaySeconds: 3
      trafficRouting:
        {routing}
      steps:
      - setWeight: 10
{analysis}      - setWeight: 25
{analysis}      - setWeight: 50
{analysis}      - setWeight: 100
"
    )
}

/// What the demo's Rollout does, in a few lines, from the Rollout as the cluster has it.
fn rollout_summary(ro: &Rollout, router: DemoRouter) -> String {
    let steps = ro
        .spec
        .strategy
        .canary
        .as_ref()
        .map(|c| c.steps.as_slice())
        .unwrap_or_default();
    let list = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = describe_step(s);
            // The analysis templates are named on the analysis line below.
            let d = if d.starts_with("analysis") {
                "analysis"
            } else {
                d.as_str()
            };
            format!("{} {d}", i + 1)
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Rollout {NS}/web: {replicas} pods; the first version goes live at once, every later one walks the steps.
  steps     {list}
  analysis  AnalysisTemplates {success} and {latency}: canary success rate >= {SUCCESS_RATE},
            p95 latency <= {P95}s, p99 <= {P99}s, over a {WINDOW} window; {COUNT} measurements {INTERVAL} apart,
            the first after {INITIAL_DELAY}; one failed measurement aborts the update
  router    {router}",
        replicas = ro.spec.replicas.unwrap_or(1),
        success = router.templates()[0],
        latency = router.templates()[1],
        router = router.describe(),
    )
}

/// Printed once, before the first update: what each column of the live lines means.
fn legend(rate: u32) -> String {
    let window = (SPLIT_FROM - SPLIT_TO).as_secs();
    format!(
        "Each line below is printed when something changes (at most once a second):
  [  4.1s]            time since the update was applied
  Progressing         the Rollout's phase
  step 2/7 analysis   the step it is at, numbered from 1, and what the step does
  weight 10/90        the traffic weights the controller set on nginx: canary / stable, in %
  measured v2 10.0%   the share of the load generator's requests that the new version answered,
  (60 req, 0 failed)    over the {window} s ending a second ago ({rate} requests/s x {window} s), and
                        how many of those requests got a 5xx
  success-rate=0.998 [x >= {SUCCESS_RATE}] Running
                      each metric of the newest AnalysisRun: its latest value, its condition
                        (x is the value) and the metric's phase; \"no data\" until the canary
                        has answered enough requests to measure
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
                    let inner = v.trim_matches(|c| c == '[' || c == ']');
                    // An empty result: the canary has no series yet.
                    if inner.trim().is_empty() {
                        return "no data".to_string();
                    }
                    inner
                        .parse::<f64>()
                        .map_or(v.clone(), |f| format!("{f:.3}"))
                })
                .unwrap_or_else(|| "no data".into());
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
    router: DemoRouter,
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
        .apply_yaml(&rollout_yaml(NS, 5, version, annotations, &steps(router)))
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
        let recent = load.between(now - SPLIT_FROM, now - SPLIT_TO);
        let split = split_of(&recent, version);
        if first_visible_failure.is_none()
            && stack
                .prometheus
                .query(&router.canary_errors())
                .await
                .is_ok_and(|v| v.first().is_some_and(|x| *x > 0.0))
        {
            first_visible_failure = Some(now);
        }
        // While aborted, the step the update was aborted at (the index itself is back at 0).
        let (step, step_name) = match st.aborted_at_step_index.filter(|_| st.abort) {
            Some(at) => (at, "aborted"),
            None => (
                step,
                STEP_NAMES
                    .get(usize::try_from(step).unwrap_or(0))
                    .copied()
                    .unwrap_or("all done"),
            ),
        };
        let step_text = format!(
            "{}/{}",
            (step + 1).min(STEP_NAMES.len() as i32),
            STEP_NAMES.len()
        );
        let line = format!(
            "[{:>5.1}s] {phase:<11} step {step_text} {step_name:<13} weight {weight:>3}/{:<3} measured {version} {:>5.1}% ({} req, {} failed)  {}",
            started.elapsed().as_secs_f64(),
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

/// The kubeconfig of the local cluster with `namespace` as its context's namespace, so that
/// `kubectl get rollouts` and `sluice get rollout web` find the demo's objects without `-n`.
fn kubeconfig_in(yaml: &str, namespace: &str) -> anyhow::Result<String> {
    let mut config: serde_json::Value = serde_yaml::from_str(yaml)?;
    let contexts = config
        .get_mut("contexts")
        .and_then(serde_json::Value::as_array_mut)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the test cluster's kubeconfig has no context"))?;
    for c in contexts {
        c["context"]["namespace"] = namespace.into();
    }
    Ok(serde_yaml::to_string(&config)?)
}

/// How to run `name` from a shell: the bare name when it is on PATH, else the full path of
/// this very binary (after `cargo run`, `sluice` is only in `target/`).
fn command_name(name: &str) -> String {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    if on_path {
        return name.to_string();
    }
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| name.to_string())
}

/// The commands to explore the kept cluster; each works when pasted into a shell.
fn explore_hint(
    kubeconfig: &std::path::Path,
    address: &str,
    prometheus: &str,
    metric: &str,
) -> String {
    let sluice = command_name("sluice");
    let install = if sluice == "sluice" {
        String::new()
    } else {
        "\n  (`cargo install --path .` puts sluice and kubectl-sluice on PATH)".to_string()
    };
    format!(
        "Explore it from another terminal (the kubeconfig's namespace is {NS}, so no -n is needed):
  export KUBECONFIG={kubeconfig}
  kubectl get rollouts,analysisruns,pods
  {sluice} get rollout web
  {sluice} explain web
  curl -H 'Host: {HOST}' http://{address}/
  Prometheus: {prometheus}/graph?g0.expr={metric}{install}",
        kubeconfig = kubeconfig.display(),
    )
}

/// Runs the live demo.
pub async fn run(out: &mut (dyn Write + Send), options: LiveOptions) -> anyhow::Result<()> {
    writeln!(
        out,
        "Starting the local cluster (nginx and Prometheus are installed with apt-get when missing, which can take a minute):"
    )?;
    out.flush()?;
    let mut progress_error = None;
    let stack = {
        let mut report = |p: Progress<'_>| {
            let written = match p {
                Progress::Starting(part) => {
                    write!(out, "  {part:<11} starting...").and_then(|()| out.flush())
                }
                Progress::Ready { address, took } => writeln!(
                    out,
                    " ready in {:.1}s{}",
                    took.as_secs_f64(),
                    if address.is_empty() {
                        String::new()
                    } else {
                        format!(" at {address}")
                    }
                ),
            };
            if let Err(e) = written {
                progress_error.get_or_insert(e);
            }
        };
        LocalStack::start_reporting(&mut report).await?
    };
    if let Some(e) = progress_error {
        return Err(e.into());
    }
    let kubeconfig = options
        .kubeconfig
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-demo.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        kubeconfig_in(&stack.cluster.kubeconfig_yaml(), NS)?,
    )
    .map_err(|e| anyhow::anyhow!("write the kubeconfig {}: {e}", kubeconfig.display()))?;
    writeln!(
        out,
        "  kubeconfig  {} (namespace {NS})",
        kubeconfig.display()
    )?;
    // The dashboard of the demo's namespace, for as long as the demo runs (port 3100 when it
    // is free, as `sluice dashboard` would take).
    let dashboard_target = crate::cli::kube::Target {
        client: stack.cluster.client(),
        namespace: NS.to_string(),
        server: stack.cluster.url().to_string(),
    };
    let dashboard = match crate::dashboard::serve(
        dashboard_target.clone(),
        false,
        ([127, 0, 0, 1], 3100).into(),
    )
    .await
    {
        Ok(d) => d,
        Err(_) => {
            crate::dashboard::serve(dashboard_target, false, ([127, 0, 0, 1], 0).into()).await?
        }
    };
    writeln!(out, "  dashboard   {}\n", dashboard.url())?;
    let router = options.router;
    match router {
        DemoRouter::IngressNginx => stack.apply_yaml(&nginx_app(NS)).await?,
        DemoRouter::GatewayApi => stack.apply_yaml(&gateway_app(NS)).await?,
    }
    for name in router.templates() {
        let mut t = template(name, INTERVAL, Some(INITIAL_DELAY))?;
        t["metadata"]["namespace"] = NS.into();
        stack.apply(t).await?;
    }
    stack
        .apply_yaml(&rollout_yaml(NS, 5, "v1", &[], &steps(router)))
        .await?;
    writeln!(
        out,
        "{}\n",
        rollout_summary(&stack.rollout(NS, "web").await?, router)
    )?;
    write!(out, "Waiting for web:v1 to be Healthy...")?;
    out.flush()?;
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), |r| {
            r.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.as_str() == "Healthy")
        })
        .await?;
    let (load, address) = match router {
        DemoRouter::IngressNginx => (
            stack.load(HOST, options.rate),
            stack.dataplane.ingress_addr(),
        ),
        DemoRouter::GatewayApi => (
            stack.gateway_load(HOST, options.rate),
            stack.dataplane.gateway_addr(),
        ),
    };
    stack.dataplane.wait_synced(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    writeln!(
        out,
        " web:v1 is live (5 pods); a load generator sends {} requests/s through nginx.\n",
        options.rate
    )?;
    writeln!(out, "{}", legend(options.rate))?;

    writeln!(
        out,
        "== Rolling out web:v2 (healthy): steps 10% / 25% / 50% / 100%, analysis after each =="
    )?;
    let good = roll_out(out, router, &stack, &load, "v2", &[(LATENCY, "2ms")]).await?;
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
    let bad = roll_out(out, router, &stack, &load, "v3", &[(ERROR_RATIO, "0.3")]).await?;
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
    if options.keep {
        writeln!(
            out,
            "\n{}",
            explore_hint(
                &kubeconfig,
                &address.to_string(),
                &stack.prometheus.url(),
                router.metric(),
            )
        )?;
        writeln!(
            out,
            "\nEverything keeps running, the load generator too; Ctrl-C stops it all."
        )?;
        out.flush()?;
        tokio::signal::ctrl_c().await?;
    } else {
        writeln!(
            out,
            "\nEverything has stopped. Run the demo with --keep to explore the cluster afterwards with kubectl and sluice."
        )?;
    }
    load.stop();
    drop(dashboard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_points_at_the_demo_namespace() {
        let base = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:1'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u, namespace: default}\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n";
        let written = kubeconfig_in(base, "demo").unwrap();
        let config: kube::config::Kubeconfig = serde_yaml::from_str(&written).unwrap();
        let ctx = config.contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.namespace.as_deref(), Some("demo"));
        assert_eq!(ctx.cluster, "c");
        assert_eq!(config.current_context.as_deref(), Some("c"));
    }

    #[test]
    fn the_summary_lists_every_step_of_the_rollout_it_applies() {
        let ro: Rollout = serde_yaml::from_str(&rollout_yaml(
            NS,
            5,
            "v1",
            &[],
            &steps(DemoRouter::IngressNginx),
        ))
        .unwrap();
        let text = rollout_summary(&ro, DemoRouter::IngressNginx);
        assert!(
            text.contains("steps     1 setWeight 10, 2 analysis, 3 setWeight 25, 4 analysis, 5 setWeight 50, 6 analysis, 7 setWeight 100"),
            "{text}"
        );
        assert!(text.contains("5 pods"), "{text}");
        assert_eq!(STEP_NAMES.len(), 7);
    }

    #[test]
    fn gateway_api_router_routes_and_measures_through_the_httproute() {
        let ro: Rollout = serde_yaml::from_str(&rollout_yaml(
            NS,
            5,
            "v1",
            &[],
            &steps(DemoRouter::GatewayApi),
        ))
        .unwrap();
        let routing = ro
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.traffic_routing.as_ref())
            .expect("traffic routing");
        assert!(routing.has_gateway_api() && routing.nginx.is_none());
        let text = rollout_summary(&ro, DemoRouter::GatewayApi);
        assert!(
            text.contains("AnalysisTemplates gateway-api-success-rate and gateway-api-latency"),
            "{text}"
        );
        assert!(
            text.contains("the HTTPRoute web (host web.example)"),
            "{text}"
        );
        // Every template the steps name ships with the demo, with the arguments it needs.
        for name in DemoRouter::GatewayApi.templates() {
            let t = template(name, INTERVAL, None).expect("shipped template");
            let args: Vec<&str> = t["spec"]["args"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| a["name"].as_str())
                .collect();
            assert!(
                args.contains(&"route") && args.contains(&"service"),
                "{name}: {args:?}"
            );
        }
        assert!(
            rollout_summary(&ro, DemoRouter::IngressNginx).contains("--router gateway-api"),
            "the default names the other router"
        );
    }
}
