//! The fault matrix, shared by `tests/fault_matrix.rs` (a reduced matrix in the test command) and
//! `examples/fault_matrix.rs` (the whole matrix, with its figures).
//!
//! An NGINX-routed canary is updated and promoted once without faults; that run's write count
//! `n` sets the matrix. Then, for every `k < n` (or every `stride`-th) and every kind of fault,
//! one more update runs with write number `k` failed (409, 500), delayed past nothing but held
//! (a hanging API server), or with the controller killed right after write `k` and started
//! afresh. Every run must reach the fault-free outcome (the new version stable and fully
//! available, no canary weight left), write canary weights that only rise until the promotion
//! sets them back to 0, and write no weight that is not one of the steps'.

use std::time::{Duration, Instant};

use sluice_e2e::Fault;
use sluice_test_support::controller::*;

const STEPS: &str = r#"
canaryService: web-canary
stableService: web-stable
scaleDownDelaySeconds: 1
abortScaleDownDelaySeconds: 1
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setWeight: 25
- pause: {duration: 1}
- setWeight: 50
- pause: {duration: 1}
- setWeight: 75
"#;

/// A fault applied in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Write `k` answered with this HTTP code (the store untouched).
    Fail(u16),
    /// Write `k` held for two seconds before it is served.
    Hang,
    /// The controller killed as soon as write `k` is in the log, and a fresh one started.
    Kill,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Fail(code) => write!(f, "fail {code}"),
            Kind::Hang => f.write_str("hang 2s"),
            Kind::Kill => f.write_str("kill after"),
        }
    }
}

/// Figures of one matrix.
#[derive(Debug, Default)]
pub struct Figures {
    /// Writes of the fault-free update and promotion.
    pub baseline_writes: usize,
    /// (kind, k, writes in that run, problem if any)
    pub runs: Vec<(Kind, usize, usize, Option<String>)>,
}

impl Figures {
    pub fn failures(&self) -> Vec<String> {
        self.runs
            .iter()
            .filter_map(|(kind, k, _, p)| p.as_ref().map(|p| format!("{kind} at write {k}: {p}")))
            .collect()
    }
}

/// Canary weights written to the canary Ingress, in order, since the write log was cleared.
fn written_weights(cluster: &sluice_e2e::TestCluster) -> Vec<i32> {
    cluster
        .writes()
        .into_iter()
        .filter(|w| w.resource == "ingresses" && w.code < 300)
        .filter_map(|w| {
            let body = w.body?.to_string();
            let at = body.find("canary-weight\"")? + "canary-weight\"".len();
            let digits: String = body[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        })
        .collect()
}

/// One update from the current version to `image`, with `fault` at write `k`; returns the
/// number of writes, or what went wrong.
async fn one_update(
    env: &mut Env,
    image: &str,
    fault: Option<(Kind, usize)>,
) -> Result<usize, String> {
    let before = current(&env.get("web").await);
    env.set_image("web", image).await;
    // Counted from here: the controller's writes only.
    env.cluster.controls().clear_writes();
    match fault {
        Some((Kind::Fail(code), k)) => env
            .cluster
            .controls()
            .inject(Fault::fail(code).writes().skip(k)),
        Some((Kind::Hang, k)) => env
            .cluster
            .controls()
            .inject(Fault::hang(Duration::from_secs(2)).writes().skip(k)),
        Some((Kind::Kill, k)) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            while env.cluster.controls().writes().len() <= k && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if let Some(c) = env.controller.take() {
                c.abort();
            }
            env.controller = Some(start_controller(&env.cluster, config()).await);
        }
        None => {}
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = env.get("web").await;
        if current(&r) != before
            && phase(&r) == "Healthy"
            && stable(&r) == current(&r)
            && weight(&r) == Some(0)
        {
            break r;
        }
        if Instant::now() > deadline {
            env.cluster.controls().clear_faults();
            return Err(format!(
                "not promoted within 60 s: phase {}, weight {:?}",
                phase(&r),
                weight(&r)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    env.cluster.controls().clear_faults();
    let writes = env.cluster.controls().writes().len();
    let hash = current(&r).unwrap_or_default();
    let pods = env.pods_of(&hash).await;
    if pods != 4 {
        return Err(format!("{pods} pods of the new version, not 4"));
    }
    if env.service_hash("web-stable").await.as_deref() != Some(hash.as_str()) {
        return Err("the stable Service does not select the new version".into());
    }
    let weights = written_weights(env.cluster.controls());
    let last_nonzero = weights.iter().rposition(|w| *w != 0).unwrap_or(0);
    if weights.is_empty() {
        return Err("no canary weight written".into());
    }
    if !weights[..=last_nonzero].windows(2).all(|p| p[0] <= p[1]) {
        return Err(format!("canary weights moved backwards: {weights:?}"));
    }
    if !weights.iter().all(|w| [0, 25, 50, 75, 100].contains(w)) {
        return Err(format!("a weight that is no step's: {weights:?}"));
    }
    if weights.last() != Some(&0) {
        return Err(format!("the last weight written is not 0: {weights:?}"));
    }
    Ok(writes)
}

/// Runs the matrix for `kinds`, every `stride`-th write.
pub async fn run_matrix(kinds: &[Kind], stride: usize) -> Figures {
    let mut env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 4, "web:0", STEPS)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let mut figures = Figures::default();
    let mut version = 0;
    let mut next_image = || {
        version += 1;
        format!("web:{version}")
    };
    figures.baseline_writes = match one_update(&mut env, &next_image(), None).await {
        Ok(n) => n,
        Err(e) => panic!("the fault-free run failed: {e}"),
    };
    for kind in kinds {
        for k in (0..figures.baseline_writes).step_by(stride.max(1)) {
            let result = one_update(&mut env, &next_image(), Some((*kind, k))).await;
            let (writes, problem) = match result {
                Ok(n) => (n, None),
                Err(e) => (0, Some(e)),
            };
            figures.runs.push((*kind, k, writes, problem));
        }
    }
    figures
}
