//! The fault matrix, shared by `tests/fault_matrix.rs` (a reduced matrix in the test command) and
//! `examples/fault_matrix.rs` (the whole matrix, with its figures).
//!
//! Four scenarios: a canary routed by NGINX (canary Ingress) or by Istio (VirtualService
//! weights), either updated and promoted, or aborted by an SRE while paused at 50%. Each scenario
//! runs once without faults; that run's count `n` of controller writes sets the matrix. Then, for
//! every `k < n` (or every `stride`-th) and every kind of fault, one more run has the
//! controller's write number `k` failed (409, 500), committed but answered 504 or with a broken
//! connection, held (a hanging API server), or the controller killed right after write `k` and
//! started afresh.
//!
//! Every run must reach the fault-free outcome, and an audit of every committed change of the
//! namespace (the store's own event stream, so no state is missed between two polls) checks that
//! traffic never moved backwards except on abort, that no weight went to a Service without a
//! ready pod, that every weight is a step's, and that no Service selector returned to a
//! ReplicaSet it had left (a write undoing an earlier one).

// Shared by a test and an example: each uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::Fault;
use sluice_test_support::controller::*;

/// The identity the controller's requests carry, so faults and counts concern its writes only.
const CONTROLLER: &str = "sluice-controller";

const PROMOTE_STEPS: &str = r#"
steps:
- setWeight: 25
- pause: {duration: 1}
- setWeight: 50
- pause: {duration: 1}
- setWeight: 75
"#;

/// Paused at 50% until someone acts: the abort comes there.
const ABORT_STEPS: &str = r#"
steps:
- setWeight: 25
- pause: {duration: 1}
- setWeight: 50
- pause: {}
- setWeight: 75
"#;

const NGINX_ROUTING: &str = r#"
canaryService: web-canary
stableService: web-stable
scaleDownDelaySeconds: 1
abortScaleDownDelaySeconds: 1
trafficRouting:
  nginx: {stableIngress: web}
"#;

const ISTIO_ROUTING: &str = r#"
canaryService: web-canary
stableService: web-stable
scaleDownDelaySeconds: 1
abortScaleDownDelaySeconds: 1
trafficRouting:
  istio:
    virtualService: {name: web, routes: [primary]}
"#;

/// Which traffic router the canary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    Nginx,
    Istio,
}

/// Where the run goes: the new version promoted, or aborted back to the stable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    Aborted,
}

/// One of the four scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub router: Router,
    pub outcome: Outcome,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::new(Router::Nginx, Outcome::Promoted),
        Scenario::new(Router::Nginx, Outcome::Aborted),
        Scenario::new(Router::Istio, Outcome::Promoted),
        Scenario::new(Router::Istio, Outcome::Aborted),
    ];

    pub const fn new(router: Router, outcome: Outcome) -> Self {
        Scenario { router, outcome }
    }

    fn canary_yaml(&self) -> String {
        let routing = match self.router {
            Router::Nginx => NGINX_ROUTING,
            Router::Istio => ISTIO_ROUTING,
        };
        let steps = match self.outcome {
            Outcome::Promoted => PROMOTE_STEPS,
            Outcome::Aborted => ABORT_STEPS,
        };
        format!("{}{}", routing.trim_start(), steps.trim_start())
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let router = match self.router {
            Router::Nginx => "NGINX",
            Router::Istio => "Istio",
        };
        let outcome = match self.outcome {
            Outcome::Promoted => "update to promotion",
            Outcome::Aborted => "abort at 50%",
        };
        write!(f, "{router}, {outcome}")
    }
}

/// A fault applied in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Write `k` answered with this HTTP code (the store untouched).
    Fail(u16),
    /// Write `k` committed, then answered 504 (the API server's request timeout).
    Timeout,
    /// Write `k` committed, then the connection broken before the answer (a reset).
    Reset,
    /// Write `k` held for two seconds before it is served.
    Hang,
    /// The controller killed as soon as write `k` is in the log, and a fresh one started.
    Kill,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Fail(409),
        Kind::Fail(500),
        Kind::Timeout,
        Kind::Reset,
        Kind::Hang,
        Kind::Kill,
    ];
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Fail(code) => write!(f, "fail {code}"),
            Kind::Timeout => f.write_str("504 after commit"),
            Kind::Reset => f.write_str("reset after commit"),
            Kind::Hang => f.write_str("hang 2s"),
            Kind::Kill => f.write_str("kill after"),
        }
    }
}

/// One run of the matrix.
#[derive(Debug, Clone)]
pub struct Run {
    pub scenario: Scenario,
    pub kind: Kind,
    pub k: usize,
    /// Controller writes in the run.
    pub writes: usize,
    pub problem: Option<String>,
}

/// Figures of one scenario's matrix.
#[derive(Debug, Default)]
pub struct Figures {
    /// Controller writes of the fault-free run, per scenario.
    pub baseline_writes: Vec<(Scenario, usize)>,
    pub runs: Vec<Run>,
}

impl Figures {
    pub fn failures(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter_map(|r| {
                r.problem
                    .as_ref()
                    .map(|p| format!("{} / {} at write {}: {p}", r.scenario, r.kind, r.k))
            })
            .collect()
    }
}

/// What the audit saw since it was last armed.
#[derive(Debug, Default)]
struct AuditLog {
    armed: bool,
    /// The namespace's pods, Services and route objects, by (plural, name), as committed.
    objects: BTreeMap<(String, String), Value>,
    /// The canary weight after every committed change that changed it, from its value at arming.
    canary_weights: Vec<i32>,
    /// Per Service, the pod-template hashes its selector named, in order, from arming.
    selectors: BTreeMap<String, Vec<String>>,
    violations: Vec<String>,
}

/// Follows every committed change of the namespace through the test cluster's own event stream
/// and checks the traffic invariants after each one.
struct Audit {
    log: Arc<Mutex<AuditLog>>,
    router: Router,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

fn hash_of_selector(svc: &Value) -> Option<String> {
    svc.pointer("/spec/selector")
        .and_then(|s| s.get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL))
        .and_then(Value::as_str)
        .map(str::to_string)
}

impl AuditLog {
    /// (stable, canary) weights the route object gives now.
    fn weights(&self, router: Router) -> (i32, i32) {
        match router {
            Router::Nginx => {
                let canary = self
                    .objects
                    .get(&("ingresses".into(), "web-web-canary".into()))
                    .and_then(|i| {
                        i.pointer("/metadata/annotations")?
                            .get("nginx.ingress.kubernetes.io/canary-weight")?
                            .as_str()?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0);
                (100 - canary, canary)
            }
            Router::Istio => {
                let route = self
                    .objects
                    .get(&("virtualservices".into(), "web".into()))
                    .and_then(|vs| vs.pointer("/spec/http")?.as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .find(|r| r["name"] == "primary")
                    .unwrap_or_default();
                let weight = |host: &str| {
                    route["route"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|d| d.pointer("/destination/host") == Some(&json!(host)))
                        .and_then(|d| d["weight"].as_i64())
                        .unwrap_or(0) as i32
                };
                (weight("web-stable"), weight("web-canary"))
            }
        }
    }

    /// Ready pods the Service `svc` selects now.
    fn ready_pods(&self, svc: &str) -> usize {
        let Some(selector) = self
            .objects
            .get(&("services".into(), svc.into()))
            .and_then(|s| s.pointer("/spec/selector")?.as_object().cloned())
            .filter(|s| !s.is_empty())
        else {
            return 0;
        };
        self.objects
            .iter()
            .filter(|((plural, _), _)| plural == "pods")
            .map(|(_, pod)| pod)
            .filter(|pod| {
                selector
                    .iter()
                    .all(|(k, v)| label(pod, k) == v.as_str() && v.is_string())
            })
            .filter(|pod| pod.pointer("/metadata/deletionTimestamp").is_none())
            .filter(|pod| {
                pod.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count()
    }

    fn check(&mut self, router: Router, rv: u64) {
        let (stable, canary) = self.weights(router);
        if self.canary_weights.last() != Some(&canary) {
            self.canary_weights.push(canary);
        }
        for svc in ["web-stable", "web-canary"] {
            if let Some(hash) = self
                .objects
                .get(&("services".into(), svc.into()))
                .and_then(hash_of_selector)
            {
                let seen = self.selectors.entry(svc.into()).or_default();
                if seen.last() != Some(&hash) {
                    seen.push(hash);
                }
            }
        }
        for (svc, weight) in [("web-stable", stable), ("web-canary", canary)] {
            if weight > 0 && self.ready_pods(svc) == 0 {
                let v = format!(
                    "at resourceVersion {rv}: {svc} gets {weight}% of the traffic and selects no ready pod"
                );
                // One line per episode, not one per event.
                if self
                    .violations
                    .last()
                    .map(|l| l.split_once(": ").map(|p| p.1))
                    != Some(v.split_once(": ").map(|p| p.1))
                {
                    self.violations.push(v);
                }
            }
        }
    }
}

impl Audit {
    fn start(cluster: &sluice_e2e::TestCluster, ns: &str, router: Router) -> Audit {
        let mut rx = cluster.store().subscribe_all();
        let log = Arc::new(Mutex::new(AuditLog::default()));
        let out = log.clone();
        let ns = ns.to_string();
        let task = tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let mut log = out.lock().unwrap_or_else(|e| e.into_inner());
                        log.violations
                            .push(format!("the audit missed {n} events: nothing can be said"));
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if ev.namespace != ns
                    || !matches!(
                        ev.key.plural.as_str(),
                        "pods" | "services" | "ingresses" | "virtualservices"
                    )
                {
                    continue;
                }
                let name = ev
                    .object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let key = (ev.key.plural.clone(), name);
                let mut log = out.lock().unwrap_or_else(|e| e.into_inner());
                if ev.kind == sluice_e2e::store::EventType::Deleted {
                    log.objects.remove(&key);
                } else {
                    log.objects.insert(key, (*ev.object).clone());
                }
                if log.armed {
                    log.check(router, ev.rv);
                }
            }
        });
        Audit { log, router, task }
    }

    /// Starts a new record from the current state.
    fn arm(&self) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.canary_weights.clear();
        log.selectors.clear();
        log.violations.clear();
        log.armed = true;
        log.check(self.router, 0);
    }

    /// Stops recording; returns the canary weights, the selectors and the violations.
    fn disarm(&self) -> (Vec<i32>, BTreeMap<String, Vec<String>>, Vec<String>) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.armed = false;
        (
            std::mem::take(&mut log.canary_weights),
            std::mem::take(&mut log.selectors),
            std::mem::take(&mut log.violations),
        )
    }
}

/// A scenario's cluster, controller and audit.
struct Bench {
    env: Env,
    audit: Audit,
    scenario: Scenario,
    sre: kube::Client,
    version: u32,
}

async fn start_identified_controller(env: &Env) -> sluice::controller::Running {
    let mut config = env.cluster.controls().config();
    config.auth_info.impersonate = Some(CONTROLLER.to_string());
    let client =
        sluice::kube_client::client(config, &sluice::kube_client::controller_user_agent(), None)
            .expect("controller client");
    sluice::controller::start(client, config_for_matrix())
        .await
        .expect("controller starts")
}

fn config_for_matrix() -> sluice::controller::ControllerConfig {
    config()
}

fn controller_writes(cluster: &sluice_e2e::TestCluster) -> usize {
    cluster
        .writes()
        .iter()
        .filter(|w| w.identity.as_deref() == Some(CONTROLLER))
        .count()
}

impl Bench {
    async fn start(scenario: Scenario) -> Bench {
        let mut env = Env::without_controller().await;
        let audit = Audit::start(env.cluster.controls(), env.ns(), scenario.router);
        env.services(&["web-stable", "web-canary"]).await;
        match scenario.router {
            Router::Nginx => env.stable_ingress().await,
            Router::Istio => {
                env.cluster
                    .controls()
                    .apply_object(json!({
                        "apiVersion": "networking.istio.io/v1",
                        "kind": "VirtualService",
                        "metadata": {"name": "web", "namespace": env.ns()},
                        "spec": {"hosts": ["web.example"], "http": [{"name": "primary", "route": [
                            {"destination": {"host": "web-stable", "port": {"number": 80}}, "weight": 100},
                            {"destination": {"host": "web-canary", "port": {"number": 80}}, "weight": 0}
                        ]}]}
                    }))
                    .expect("VirtualService web");
            }
        }
        env.controller = Some(start_identified_controller(&env).await);
        env.create(&rollout("web", 4, "web:0", &scenario.canary_yaml()))
            .await;
        env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
            .await;
        let sre = env
            .cluster
            .controls()
            .client_as("sre")
            .expect("a client for the SRE");
        Bench {
            env,
            audit,
            scenario,
            sre,
            version: 0,
        }
    }

    /// One run with `fault` at the controller's write `k`; returns the controller's writes, or
    /// what went wrong.
    async fn run(&mut self, fault: Option<(Kind, usize)>) -> Result<usize, String> {
        let result = self.run_inner(fault).await;
        self.env.cluster.controls().clear_faults();
        let (weights, selectors, violations) = self.audit.disarm();
        let writes = result?;
        if !violations.is_empty() {
            return Err(violations.join("; "));
        }
        self.check_history(&weights, &selectors)?;
        Ok(writes)
    }

    async fn run_inner(&mut self, fault: Option<(Kind, usize)>) -> Result<usize, String> {
        let env = &mut self.env;
        let old = env.get("web").await;
        let old_hash = current(&old).unwrap_or_default();
        // After an aborted run the newest version is not the stable one.
        let old_stable = stable(&old).unwrap_or_default();
        self.version += 1;
        env.set_image("web", &format!("web:{}", self.version)).await;
        if self.scenario.outcome == Outcome::Aborted {
            // The fault concerns the abort path: from the SRE's abort at 50% to the stable
            // version alone.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = env.get("web").await;
                let paused = r
                    .status
                    .as_ref()
                    .is_some_and(|s| !s.pause_conditions.is_empty());
                if current(&r) != Some(old_hash.clone()) && step(&r) == Some(3) && paused {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "never paused at 50% before the abort: phase {}, step {:?}",
                        phase(&r),
                        step(&r)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let controls = env.cluster.controls();
        controls.clear_writes();
        self.audit.arm();
        let armed = |f: Fault| controls.inject(f.writes().identity(CONTROLLER));
        match fault {
            Some((Kind::Fail(code), k)) => armed(Fault::fail(code).skip(k)),
            Some((Kind::Timeout, k)) => armed(Fault::timeout_after_commit().skip(k)),
            Some((Kind::Reset, k)) => armed(Fault::reset_after_commit().skip(k)),
            Some((Kind::Hang, k)) => armed(Fault::hang(Duration::from_secs(2)).skip(k)),
            Some((Kind::Kill, _)) | None => {}
        }
        if self.scenario.outcome == Outcome::Aborted {
            let api: kube::Api<sluice::api::rollout::Rollout> =
                kube::Api::namespaced(self.sre.clone(), env.ns());
            api.patch_status(
                "web",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"status": {"abort": true}})),
            )
            .await
            .map_err(|e| format!("the SRE's abort was refused: {e}"))?;
        }
        if let Some((Kind::Kill, k)) = fault {
            let deadline = Instant::now() + Duration::from_secs(30);
            while controller_writes(controls) <= k && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let Some(c) = env.controller.take() {
                c.abort();
            }
            env.controller = Some(start_identified_controller(env).await);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let r = loop {
            let r = env.get("web").await;
            let done = match self.scenario.outcome {
                Outcome::Promoted => {
                    current(&r) != Some(old_hash.clone())
                        && phase(&r) == "Healthy"
                        && stable(&r) == current(&r)
                        && weight(&r) == Some(0)
                }
                Outcome::Aborted => {
                    let new = current(&r).unwrap_or_default();
                    phase(&r) == "Degraded"
                        && r.status.as_ref().is_some_and(|s| s.abort)
                        && weight(&r) == Some(0)
                        && env.pods_of(&new).await == 0
                }
            };
            if done {
                break r;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not {} within 60 s: phase {}, weight {:?}, message {:?}",
                    match self.scenario.outcome {
                        Outcome::Promoted => "promoted",
                        Outcome::Aborted => "aborted",
                    },
                    phase(&r),
                    weight(&r),
                    r.status.as_ref().and_then(|s| s.message.clone())
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // The last changes (scale-down) are in the audit before it stops.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let writes = controller_writes(controls);
        let stable_hash = match self.scenario.outcome {
            Outcome::Promoted => current(&r).unwrap_or_default(),
            Outcome::Aborted => {
                if stable(&r).as_deref() != Some(old_stable.as_str()) {
                    return Err(format!(
                        "the abort changed the stable version: {:?}, not {old_stable}",
                        stable(&r)
                    ));
                }
                old_stable
            }
        };
        let pods = env.pods_of(&stable_hash).await;
        if pods != 4 {
            return Err(format!("{pods} pods of the stable version, not 4"));
        }
        if env.service_hash("web-stable").await.as_deref() != Some(stable_hash.as_str()) {
            return Err("the stable Service does not select the stable version".into());
        }
        Ok(writes)
    }

    /// The committed history of the run, as the audit saw it.
    fn check_history(
        &self,
        weights: &[i32],
        selectors: &BTreeMap<String, Vec<String>>,
    ) -> Result<(), String> {
        if !weights.iter().all(|w| [0, 25, 50, 75, 100].contains(w)) {
            return Err(format!("a canary weight that is no step's: {weights:?}"));
        }
        if weights.last() != Some(&0) {
            return Err(format!("the canary weight did not end at 0: {weights:?}"));
        }
        match self.scenario.outcome {
            Outcome::Promoted => {
                // Rising until the promotion sends everything to the (new) stable Service.
                let last_nonzero = weights.iter().rposition(|w| *w != 0).unwrap_or(0);
                if !weights[..=last_nonzero].windows(2).all(|p| p[0] <= p[1]) {
                    return Err(format!("canary weights moved backwards: {weights:?}"));
                }
                if weights.len() < 2 {
                    return Err(format!("no step's weight was ever set: {weights:?}"));
                }
            }
            Outcome::Aborted => {
                if weights.first() != Some(&50) || !weights.windows(2).all(|p| p[0] >= p[1]) {
                    return Err(format!(
                        "the abort did not take the canary from 50% straight down: {weights:?}"
                    ));
                }
                if selectors.get("web-stable").is_some_and(|s| s.len() > 1) {
                    return Err(format!(
                        "the abort moved the stable Service: {:?}",
                        selectors["web-stable"]
                    ));
                }
            }
        }
        for (svc, hashes) in selectors {
            for (i, h) in hashes.iter().enumerate() {
                // Consecutive repeats are folded, so any repeat is a return.
                if hashes[..i].contains(h) {
                    return Err(format!(
                        "{svc} returned to a ReplicaSet it had left (a write undone): {hashes:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs `scenario`: the fault-free run, then every `stride`-th write with each of `kinds` (all
/// of them at every `k`, or with `diagonal` one kind per `k`, in turn, so that a short matrix
/// still sees each kind at different writes).
pub async fn run_scenario(
    scenario: Scenario,
    kinds: &[Kind],
    stride: usize,
    diagonal: bool,
) -> Figures {
    let mut bench = Bench::start(scenario).await;
    let mut figures = Figures::default();
    let baseline = match bench.run(None).await {
        Ok(n) => n,
        Err(e) => panic!("{scenario}: the fault-free run failed: {e}"),
    };
    figures.baseline_writes.push((scenario, baseline));
    for (i, k) in (0..baseline).step_by(stride.max(1)).enumerate() {
        let chosen: Vec<Kind> = if diagonal {
            vec![kinds[i % kinds.len()]]
        } else {
            kinds.to_vec()
        };
        for kind in chosen {
            let result = bench.run(Some((kind, k))).await;
            let (writes, problem) = match result {
                Ok(n) => (n, None),
                Err(e) => (0, Some(e)),
            };
            figures.runs.push(Run {
                scenario,
                kind,
                k,
                writes,
                problem,
            });
        }
    }
    figures
}
