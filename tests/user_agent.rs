//! Every request Sluice makes names it: `sluice-controller/<version>` for the controller,
//! `sluice/<version>` for the CLI, so an API server's audit log can tell them from anyone else.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, PostParams};
use sluice::api::rollout::Rollout;
use sluice::controller::{self, ControllerConfig};
use sluice::kube_client;
use sluice_e2e::TestCluster;

fn rollout() -> Rollout {
    sluice_test_support::rollout::canary("{steps: [{setWeight: 50}, {pause: {}}]}")
        .namespace("default")
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_and_cli_requests_carry_their_user_agents() {
    let cluster = TestCluster::builder()
        .pod_ready_delay(Duration::from_millis(100))
        .start()
        .await
        .expect("test cluster");
    cluster
        .load_crds_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .expect("crds");
    let controller_agent = kube_client::controller_user_agent();
    assert_eq!(
        controller_agent,
        format!("sluice-controller/{}", env!("CARGO_PKG_VERSION"))
    );
    let client = kube_client::client(cluster.config(), &controller_agent, None).expect("client");
    let _running = controller::start(client, ControllerConfig::default())
        .await
        .expect("controller starts");
    let api: Api<Rollout> = Api::namespaced(cluster.client(), "default");
    api.create(&PostParams::default(), &rollout())
        .await
        .expect("create rollout");

    // The controller writes the first ReplicaSet and the Rollout's status.
    let mut controller_writes = Vec::new();
    for _ in 0..240 {
        controller_writes = cluster
            .writes()
            .into_iter()
            .filter(|w| w.field_manager.as_deref() == Some("sluice"))
            .collect();
        let status_written = controller_writes
            .iter()
            .any(|w| w.resource == "rollouts" && w.subresource.as_deref() == Some("status"));
        let rs_created = controller_writes
            .iter()
            .any(|w| w.resource == "replicasets" && w.method == "POST");
        if status_written && rs_created {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        controller_writes
            .iter()
            .any(|w| w.resource == "replicasets"),
        "the controller created a ReplicaSet: {controller_writes:#?}"
    );
    for w in &controller_writes {
        assert_eq!(
            w.user_agent.as_deref(),
            Some(controller_agent.as_str()),
            "{} {}",
            w.method,
            w.uri
        );
    }

    // The CLI, as a user runs it.
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    cluster.clear_writes();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["pause", "web"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .expect("run sluice");
    assert!(
        out.status.success(),
        "sluice pause: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_agent = format!("sluice/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(kube_client::cli_user_agent(), cli_agent);
    let cli_writes: Vec<_> = cluster
        .writes()
        .into_iter()
        .filter(|w| w.resource == "rollouts" && w.method == "PATCH")
        .filter(|w| w.field_manager.as_deref() == Some("sluice-cli"))
        .collect();
    assert!(!cli_writes.is_empty(), "sluice pause patched the Rollout");
    for w in &cli_writes {
        assert_eq!(
            w.user_agent.as_deref(),
            Some(cli_agent.as_str()),
            "{}",
            w.uri
        );
    }
}
