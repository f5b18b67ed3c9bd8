//! The real `kubectl` against a running test cluster: list, `get -o yaml`, and server-side apply.
//! A missing kubectl fails the test (install it with `apt-get install kubectl`).

use std::path::Path;

use serde_json::Value;
use sluice_e2e::TestCluster;

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl must be installed (apt-get install kubectl)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: demo
  namespace: default
data:
  greeting: hello
---
apiVersion: e2e.sluice.dev/v1
kind: Widget
metadata:
  name: gizmo
  namespace: default
spec:
  size: large
  replicas: 3
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: web
  namespace: default
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: stable}
      weight: 90
    - destination: {host: web, subset: canary}
      weight: 10
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_shows_and_server_side_applies() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.install_crd(sluice_e2e::example_crd()).unwrap();
    assert_eq!(cluster.install_istio_crds().unwrap(), 7);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).unwrap();
    let manifest = dir.path().join("manifest.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();

    let applied = kubectl(
        &kubeconfig,
        &["apply", "--server-side", "-f", manifest.to_str().unwrap()],
    )
    .await;
    assert!(
        applied.contains("configmap/demo serverside-applied"),
        "{applied}"
    );
    assert!(
        applied.contains("widget.e2e.sluice.dev/gizmo serverside-applied"),
        "{applied}"
    );
    assert!(
        applied.contains("virtualservice.networking.istio.io/web serverside-applied"),
        "{applied}"
    );

    let applies: Vec<_> = cluster
        .writes()
        .into_iter()
        .filter(|w| w.verb == "patch")
        .collect();
    assert_eq!(applies.len(), 3);
    for w in &applies {
        assert_eq!(w.code, 201, "{w:?}");
        assert_eq!(w.field_manager.as_deref(), Some("kubectl"));
        assert!(
            w.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/apply-patch")),
            "{w:?}"
        );
    }

    let namespaces = kubectl(&kubeconfig, &["get", "namespaces"]).await;
    assert!(
        namespaces.lines().any(|l| l.starts_with("default ")),
        "{namespaces}"
    );
    let widgets = kubectl(&kubeconfig, &["get", "widgets"]).await;
    assert!(widgets.contains("gizmo"), "{widgets}");
    assert!(
        widgets.contains("REPLICAS"),
        "printer columns are shown: {widgets}"
    );

    let yaml = kubectl(&kubeconfig, &["get", "widget", "gizmo", "-o", "yaml"]).await;
    let widget: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(widget["spec"]["size"], "large");
    assert_eq!(widget["metadata"]["generation"], 1);

    let vs: Value = serde_yaml::from_str(
        &kubectl(&kubeconfig, &["get", "virtualservice", "web", "-o", "yaml"]).await,
    )
    .unwrap();
    assert_eq!(
        vs["spec"]["http"][0]["route"][1]["weight"], 10,
        "unknown fields are preserved"
    );

    // Re-applying a changed manifest updates in place; the Widget's generation follows its spec.
    std::fs::write(
        &manifest,
        MANIFEST
            .replace("greeting: hello", "greeting: bonjour")
            .replace("replicas: 3", "replicas: 4"),
    )
    .unwrap();
    kubectl(
        &kubeconfig,
        &["apply", "--server-side", "-f", manifest.to_str().unwrap()],
    )
    .await;
    let cm: Value = serde_yaml::from_str(
        &kubectl(&kubeconfig, &["get", "configmap", "demo", "-o", "yaml"]).await,
    )
    .unwrap();
    assert_eq!(cm["data"]["greeting"], "bonjour");
    let widget: Value = serde_yaml::from_str(
        &kubectl(&kubeconfig, &["get", "widget", "gizmo", "-o", "yaml"]).await,
    )
    .unwrap();
    assert_eq!(widget["metadata"]["generation"], 2);
    assert_eq!(widget["spec"]["replicas"], 4);

    // Generator commands send protobuf, decoded for the kinds they create most.
    kubectl(&kubeconfig, &["create", "namespace", "generated"]).await;
    kubectl(
        &kubeconfig,
        &[
            "create",
            "configmap",
            "gen",
            "-n",
            "generated",
            "--from-literal=k=v",
        ],
    )
    .await;
    kubectl(
        &kubeconfig,
        &[
            "create",
            "secret",
            "generic",
            "gen",
            "-n",
            "generated",
            "--from-literal=p=q",
        ],
    )
    .await;
    let cm = cluster
        .object("", "configmaps", "generated", "gen")
        .unwrap();
    assert_eq!(cm["data"]["k"], "v");
    let secret = cluster.object("", "secrets", "generated", "gen").unwrap();
    assert_eq!(secret["data"]["p"], "cQ==");

    let json = kubectl(&kubeconfig, &["get", "configmaps", "-A", "-o", "json"]).await;
    let list: Value = serde_json::from_str(&json).unwrap();
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == "demo")
    );
}
