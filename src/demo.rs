//! `sluice demo`. The real one lives in [`live`]: the local closed loop of [`stack`] (test
//! cluster, app processes, nginx, Prometheus, controller, load). This file keeps the in-memory
//! version (`sluice demo --simulate`): a canary rollout of a sample application, decided by the
//! real planner against a simulated cluster (ReplicaSets whose pods start over a few seconds, a
//! router that applies weights, analysis runs whose outcome is scripted). A good version is
//! promoted; a bad one is aborted by its analysis and traffic returns to stable without a human.
//!
//! The live demo links the in-process API server of `sluice-e2e`, so it exists only with the
//! `demo` feature (on by default; the container image is built without it).

#[cfg(feature = "demo")]
pub mod live;
#[cfg(feature = "demo")]
pub mod stack;

use std::fmt::Write as _;
use std::time::Duration;

use crate::api::common::AnalysisPhase;
use crate::api::rollout::Rollout;
use crate::plan::sim::World;
use crate::plan::{AnalysisRunKind, describe_step};

/// The sample Rollout the demo runs.
pub const SAMPLE_ROLLOUT: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: web
  namespace: demo
  generation: 1
spec:
  replicas: 10
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: demo/web:v1
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      abortScaleDownDelaySeconds: 10
      scaleDownDelaySeconds: 10
      trafficRouting:
        nginx:
          stableIngress: web
      steps:
      - setWeight: 10
      - pause: {duration: 5s}
      - setWeight: 25
      - analysis:
          templates:
          - templateName: nginx-success-rate
      - setWeight: 50
      - pause: {duration: 5s}
      - setWeight: 100
"#;

/// Runs the demo, writing a line per observable change to `out`.
pub fn run(out: &mut dyn std::io::Write, pace: Duration) -> anyhow::Result<()> {
    let rollout: Rollout = serde_yaml::from_str(SAMPLE_ROLLOUT)?;
    let now: jiff::Timestamp = "2026-01-01T12:00:00Z".parse()?;
    let mut world = World::new(rollout, now);
    world.pods_ready_per_tick = Some(2);
    writeln!(
        out,
        "Sluice demo: Rollout demo/web, 10 replicas, NGINX canary 10% → 25% → analysis → 50% → 100%."
    )?;
    writeln!(
        out,
        "The planner decides every step; the cluster, router and metrics are simulated.\n"
    )?;
    settle(&mut world, out, pace, None, 60)?;

    writeln!(
        out,
        "\n== Rolling out demo/web:v2 (healthy: success rate 0.998) =="
    )?;
    world.set_image("demo/web:v2");
    settle(
        &mut world,
        out,
        pace,
        Some((AnalysisPhase::Successful, "success-rate 0.998 >= 0.95")),
        120,
    )?;

    writeln!(
        out,
        "\n== Rolling out demo/web:v3 (bad: 30% of requests fail) =="
    )?;
    world.set_image("demo/web:v3");
    settle(
        &mut world,
        out,
        pace,
        Some((
            AnalysisPhase::Failed,
            "metric \"success-rate\" failed: 0.70 is not >= 0.95 (failures 2 > limit 1)",
        )),
        120,
    )?;
    let st = world.rollout.status.clone().unwrap_or_default();
    writeln!(out, "\n== Summary ==")?;
    writeln!(
        out,
        "phase {}; stable version {}; canary weight {}%.",
        st.phase.map_or("-", |p| p.as_str()),
        st.stable_rs.unwrap_or_default(),
        world.traffic.canary_weight.unwrap_or(0)
    )?;
    if let Some(m) = st.message {
        writeln!(out, "why: {m}")?;
    }
    writeln!(
        out,
        "v3 received traffic only at 10% and 25% before its analysis failed; the abort set the weight to 0 before any canary pod was removed."
    )?;
    Ok(())
}

fn settle(
    world: &mut World,
    out: &mut dyn std::io::Write,
    pace: Duration,
    analysis: Option<(AnalysisPhase, &str)>,
    max_ticks: usize,
) -> anyhow::Result<()> {
    let mut last = String::new();
    let mut printed_events = world.events.len();
    for tick in 0..max_ticks {
        let plan = world.reconcile();
        for e in &world.events[printed_events..] {
            writeln!(out, "  [{}] {}: {}", clock(world), e.reason, e.message)?;
        }
        printed_events = world.events.len();
        let line = summary(world);
        if line != last {
            writeln!(out, "  [{}] {line}", clock(world))?;
            last = line;
        }
        // The analysis reports a few seconds after it starts.
        if let Some((phase, message)) = analysis
            && let Some(run) = world
                .analysis_runs
                .iter()
                .find(|r| !r.terminated && r.phase == AnalysisPhase::Running)
            && let AnalysisRunKind::Step(_) = run.kind
        {
            let name = run.name.clone();
            world.set_run_phase(run.kind, phase, message);
            writeln!(
                out,
                "  [{}] analysis {name}: {phase}: {message}",
                clock(world)
            )?;
        }
        let st = world.rollout.status.clone().unwrap_or_default();
        let settled = st.stable_rs == st.current_pod_hash
            && st.phase.is_some_and(|p| p.as_str() == "Healthy");
        let aborted_and_clean = st.abort
            && world.traffic.canary_weight == Some(0)
            && world
                .replica_sets
                .iter()
                .filter(|r| Some(&r.hash) == st.current_pod_hash.as_ref())
                .all(|r| r.replicas == 0);
        if tick > 0 && (settled || aborted_and_clean) && plan.requeue_after.is_none() {
            break;
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
        world.advance(Duration::from_secs(1));
    }
    Ok(())
}

fn clock(world: &World) -> String {
    world.now.strftime("%H:%M:%S").to_string()
}

fn summary(world: &World) -> String {
    let st = world.rollout.status.clone().unwrap_or_default();
    let steps = world
        .rollout
        .spec
        .strategy
        .canary
        .as_ref()
        .map(|c| c.steps.clone())
        .unwrap_or_default();
    // While aborted the index is back at 0; the step that matters is the one of the abort.
    let aborted_at = st
        .aborted_at_step_index
        .filter(|_| st.abort)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < steps.len());
    let idx = st.current_step_index.unwrap_or(0) as usize;
    let step = if let Some(i) = aborted_at {
        format!("step {}/{} aborted", i + 1, steps.len())
    } else if idx < steps.len() {
        format!(
            "step {}/{} {}",
            idx + 1,
            steps.len(),
            describe_step(&steps[idx])
        )
    } else {
        format!("steps done ({})", steps.len())
    };
    let mut pods = String::new();
    let mut sets: Vec<_> = world
        .replica_sets
        .iter()
        .filter(|r| r.replicas > 0)
        .collect();
    sets.sort_by_key(|r| r.revision);
    for r in sets {
        let role = if Some(&r.hash) == st.stable_rs.as_ref() {
            "stable"
        } else {
            "canary"
        };
        let _ = write!(pods, " {role} {}/{}", r.available, r.replicas);
    }
    format!(
        "{:<11} {:<28} weight {:>3}% |{pods}",
        st.phase.map_or("-", |p| p.as_str()),
        step,
        world.traffic.canary_weight.unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_promotes_the_good_version_and_aborts_the_bad_one() {
        let mut out = Vec::new();
        super::run(&mut out, std::time::Duration::ZERO).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("RolloutCompleted"), "{text}");
        assert!(text.contains("RolloutAborted"), "{text}");
        assert!(text.contains("phase Degraded"), "{text}");
        assert!(text.contains("canary weight 0%"), "{text}");
        // After the abort, lines name the step of the abort, not the index reset to 0.
        assert!(text.contains("Degraded    step 4/7 aborted"), "{text}");
        assert!(!text.contains("Degraded    step 1/7"), "{text}");
    }
}
