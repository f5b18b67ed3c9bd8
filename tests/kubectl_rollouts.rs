//! What a user types with plain `kubectl` against a cluster running Sluice works as on a real
//! cluster: `kubectl apply -f` (client-side, with kubectl's default strict validation),
//! `kubectl explain`, and `kubectl describe rollout` listing the controller's Events.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use sluice::controller::{self, ControllerConfig};
use sluice::kube_client;
use sluice_e2e::TestCluster;

const ROLLOUT: &str = r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: web:1
        resources:
          requests: {cpu: 100m, memory: 64Mi}
  strategy:
    canary:
      steps:
      - setWeight: 50
      - pause: {DURATION}
"#;

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl must be installed (e2e/run-tests.sh installs kubernetes-client)")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_kubectl_applies_explains_and_describes_rollouts_with_their_events() {
    let cluster = TestCluster::builder()
        .pod_ready_delay(Duration::from_millis(100))
        .start()
        .await
        .expect("test cluster");
    cluster
        .load_crds_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .expect("crds");
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    // A misspelt field: kubectl's default validation is strict, and the server names the field.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, ROLLOUT.replace("{DURATION}", "{duraton: 5m}")).unwrap();
    let out = kubectl(&kubeconfig, &["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(!out.status.success(), "a misspelt field is refused");
    assert!(
        text(&out).contains("spec.strategy.canary.steps[1].pause.duraton"),
        "{}",
        text(&out)
    );
    assert!(
        cluster
            .object("sluice.dev", "rollouts", "default", "web")
            .is_none(),
        "nothing stored"
    );

    // The corrected manifest, with plain `kubectl apply -f` (no --validate=false).
    let good = tmp.path().join("good.yaml");
    std::fs::write(&good, ROLLOUT.replace("{DURATION}", "{}")).unwrap();
    let out = kubectl(&kubeconfig, &["apply", "-f", good.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("rollout.sluice.dev/web created"),
        "{}",
        text(&out)
    );

    let out = kubectl(
        &kubeconfig,
        &["explain", "rollout.spec.strategy.canary.steps"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("at most 100"), "{}", text(&out));
    assert!(text(&out).contains("setWeight"), "{}", text(&out));

    // The controller (built as the binary builds it) reconciles and records Events; describe
    // lists them, as on a real cluster where both Event APIs share one storage.
    let client = kube_client::client(
        cluster.config(),
        &kube_client::controller_user_agent(),
        None,
    )
    .expect("client");
    let _running = controller::start(client, ControllerConfig::default())
        .await
        .expect("controller starts");
    let mut described = String::new();
    for _ in 0..240 {
        let out = kubectl(&kubeconfig, &["describe", "rollout", "web"]).await;
        assert!(out.status.success(), "{}", text(&out));
        described = text(&out);
        if described
            .split("Events:")
            .nth(1)
            .is_some_and(|events| events.contains("sluice"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let events = described
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section: {described}"));
    assert!(
        !events.contains("<none>"),
        "describe lists the controller's Events: {described}"
    );
    assert!(events.contains("sluice"), "{described}");
}
