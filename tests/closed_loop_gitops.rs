//! GitOps through the closed loop: the manifests live in a local git repository and a sync loop
//! applies the checked-out tree every 500 ms (server-side apply, as Argo CD / Flux do).
//! Committing a new image starts a rollout; reverting the commit in the middle returns to the
//! stable version at once; a bad version aborts while Git still names it, and stays aborted
//! while the sync loop keeps applying it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice::demo::stack::{LocalStack, Timeline, apply_yaml, nginx_app, rollout_yaml, template};
use sluice_e2e::demo_app::ERROR_RATIO;
use sluice_test_support::closed_loop::wait_all_served_by;
use sluice_test_support::rollout::phase;

const NS: &str = "default";

const CANARY: &str = "      canaryService: web-canary
      stableService: web-stable
      scaleDownDelaySeconds: 2
      abortScaleDownDelaySeconds: 2
      trafficRouting:
        nginx: {stableIngress: web}
      steps:
      - setWeight: 20
      - analysis:
          templates: [{templateName: nginx-success-rate}]
          args:
          - {name: namespace, value: default}
          - {name: ingress, value: web}
          - {name: service, value: web-canary}
          - {name: window, value: 5s}
          - {name: count, value: \"2\"}
      - setWeight: 50
      - pause: {duration: 60s}
      - setWeight: 100
";

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit_rollout(repo: &Path, version: &str, annotations: &[(&str, &str)], message: &str) {
    std::fs::write(
        repo.join("rollout.yaml"),
        rollout_yaml(NS, 4, version, annotations, CANARY),
    )
    .unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", message]);
}

/// Applies every `*.yaml` of the checked-out tree every 500 ms.
fn sync_loop(client: kube::Client, repo: std::path::PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut files: Vec<_> = std::fs::read_dir(&repo)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect();
            files.sort();
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap_or_default();
                if let Err(e) = apply_yaml(&client, &text).await {
                    eprintln!("sync of {} failed: {e:#}", f.display());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

fn weight(r: &sluice::api::rollout::Rollout) -> i32 {
    sluice_test_support::rollout::weight(r).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_commits_drive_rollouts_reverts_return_to_stable_and_bad_versions_abort() {
    let stack = LocalStack::start().await.expect("local stack starts");
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path().to_path_buf();
    git(&repo, &["init", "-q"]);
    git(&repo, &["config", "user.email", "ci@sluice.dev"]);
    git(&repo, &["config", "user.name", "ci"]);
    std::fs::write(repo.join("app.yaml"), nginx_app(NS)).unwrap();
    std::fs::write(
        repo.join("template.yaml"),
        serde_yaml::to_string(&template("nginx-success-rate", "1s", Some("3s")).unwrap()).unwrap(),
    )
    .unwrap();
    commit_rollout(&repo, "v1", &[], "web v1");
    let _sync = sync_loop(stack.client(), repo.clone());
    let v1 = stack
        .wait_rollout(NS, "web", Duration::from_secs(60), |r| {
            phase(r) == "Healthy"
        })
        .await
        .expect("v1 healthy")
        .status
        .and_then(|s| s.stable_rs);
    let load = stack.load("web.example", 40);
    wait_all_served_by(&load, "v1").await;

    // A commit with a new image starts a rollout.
    commit_rollout(&repo, "v2", &[], "web v2");
    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), |r| weight(r) == 50)
        .await
        .expect("v2 at 50% after its analysis");
    // Reverting the commit mid-way returns to stable at once: no steps, no analysis.
    let timeline = Timeline::start(stack.client(), NS, "web");
    let reverted = Instant::now();
    git(&repo, &["revert", "--no-edit", "HEAD"]);
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(20), |r| {
            phase(r) == "Healthy" && weight(r) == 0
        })
        .await
        .expect("back on v1");
    assert_eq!(r.status.as_ref().and_then(|s| s.stable_rs.clone()), v1);
    assert_eq!(
        r.status.as_ref().and_then(|s| s.current_pod_hash.clone()),
        v1,
        "the reverted template is v1's"
    );
    let weights: Vec<i32> = timeline.states().iter().map(|s| s.weight).collect();
    assert!(
        weights.iter().all(|w| *w == 50 || *w == 0),
        "straight from 50 to 0, no steps: {weights:?}"
    );
    wait_all_served_by(&load, "v1").await;
    eprintln!(
        "revert to all-v1 traffic: {:.1}s",
        reverted.elapsed().as_secs_f64()
    );

    // A bad version aborts while Git still names it, and stays aborted under the sync loop.
    commit_rollout(&repo, "v3", &[(ERROR_RATIO, "0.3")], "web v3");
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(60), |r| {
            phase(r) == "Degraded" && weight(r) == 0
        })
        .await
        .expect("v3 aborted");
    let msg = r
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    assert!(msg.contains("success-rate"), "{msg}");
    assert!(
        std::fs::read_to_string(repo.join("rollout.yaml"))
            .unwrap()
            .contains("web:v3"),
        "Git still names v3"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = stack.rollout(NS, "web").await.unwrap();
    assert_eq!(phase(&r), "Degraded", "still aborted after more syncs");
    assert_eq!(weight(&r), 0);
    let st = r.status.unwrap();
    assert!(st.abort);
    assert_eq!(st.stable_rs, v1, "stable is still v1");
    wait_all_served_by(&load, "v1").await;
}
