//! The real `kubectl` with its default validation (`--validate=strict`, which asks the server to
//! validate fields once the OpenAPI v3 document says it can) and `kubectl explain`, both of which
//! read the test cluster's `/openapi/v3`. A missing kubectl fails the test.

use std::path::Path;

use serde_json::Value;
use sluice_e2e::TestCluster;

/// Runs kubectl with its own cache directory; returns (success, stdout, stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let cache = kubeconfig.with_file_name("cache");
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .output()
        .await
        .expect("kubectl must be installed (apt-get install kubectl)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(kubeconfig, args).await;
    assert!(ok, "kubectl {args:?} failed: {stderr}\n{stdout}");
    stdout
}

async fn setup() -> (TestCluster, tempfile::TempDir, std::path::PathBuf) {
    let cluster = TestCluster::start().await.unwrap();
    cluster.install_crd(sluice_e2e::example_crd()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).unwrap();
    (cluster, dir, kubeconfig)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const GOOD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: demo, namespace: default}
data: {greeting: hello}
---
apiVersion: e2e.sluice.dev/v1
kind: Widget
metadata: {name: gizmo, namespace: default}
spec: {size: large, replicas: 3}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_kubectl_apply_validates_on_the_server() {
    let (cluster, dir, kubeconfig) = setup().await;
    let good = write(dir.path(), "good.yaml", GOOD);
    let out = kubectl_ok(&kubeconfig, &["apply", "-f", &good]).await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("widget.e2e.sluice.dev/gizmo created"), "{out}");
    // kubectl found fieldValidation in the OpenAPI v3 document and let the server validate.
    let strict_writes = cluster
        .writes()
        .iter()
        .filter(|w| w.uri.contains("fieldValidation=Strict"))
        .count();
    assert!(strict_writes >= 3, "{:?}", cluster.writes());
    // A second apply patches (client-side apply computes the patch from kubectl's own types).
    let changed = write(
        dir.path(),
        "changed.yaml",
        &GOOD.replace("replicas: 1", "replicas: 2"),
    );
    let out = kubectl_ok(&kubeconfig, &["apply", "-f", &changed]).await;
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let stored = cluster
        .object("apps", "deployments", "default", "web")
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 2);

    // An unknown field fails as kubectl users see it from a real server.
    let bad = write(
        dir.path(),
        "bad.yaml",
        &GOOD
            .replace("image: nginx}", "image: nginx, imagee: typo}")
            .replace("name: web, namespace", "name: web2, namespace"),
    );
    let (ok, _, stderr) = kubectl(&kubeconfig, &["apply", "-f", &bad]).await;
    assert!(!ok);
    assert!(
        stderr.contains(
            "Error from server (BadRequest): error when creating \"".to_string().as_str()
        ) && stderr.contains(
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.template.spec.containers[0].imagee\""
        ),
        "{stderr}"
    );
    assert!(
        cluster
            .object("apps", "deployments", "default", "web2")
            .is_none()
    );
    // --validate=warn stores it without the field and prints the server's warning.
    let (ok, _, stderr) = kubectl(&kubeconfig, &["apply", "--validate=warn", "-f", &bad]).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Warning: unknown field \"spec.template.spec.containers[0].imagee\""),
        "{stderr}"
    );
    // Server-side apply: the server's typed conversion refuses the field.
    let (ok, _, stderr) = kubectl(&kubeconfig, &["apply", "--server-side", "-f", &bad]).await;
    assert!(!ok);
    assert!(
        stderr.contains(
            ".spec.template.spec.containers[name=\"web\"].imagee: field not declared in schema"
        ),
        "{stderr}"
    );
}

const ROLLOUT: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: worker, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers: [{name: worker, image: "worker:7"}]
  strategy:
    canary:
      steps:
      - setWeight: 10
      - pause: {duration: 5m}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_pause_duration_is_refused_not_turned_into_an_indefinite_pause() {
    let (cluster, dir, kubeconfig) = setup().await;
    cluster
        .load_crds_from_dir(Path::new("../crds"))
        .expect("the repository's crds load");
    let typo = write(
        dir.path(),
        "typo.yaml",
        &ROLLOUT.replace("duration: 5m", "duraton: 5m"),
    );
    let (ok, _, stderr) = kubectl(&kubeconfig, &["apply", "-f", &typo]).await;
    assert!(!ok);
    assert!(
        stderr.contains("Rollout in version \"v1alpha1\" cannot be handled as a Rollout: strict decoding error: unknown field \"spec.strategy.canary.steps[1].pause.duraton\""),
        "{stderr}"
    );
    assert!(
        cluster
            .object("sluice.dev", "rollouts", "default", "worker")
            .is_none()
    );
    let good = write(dir.path(), "rollout.yaml", ROLLOUT);
    kubectl_ok(&kubeconfig, &["apply", "-f", &good]).await;
    let stored = cluster
        .object("sluice.dev", "rollouts", "default", "worker")
        .unwrap();
    assert_eq!(
        stored["spec"]["strategy"]["canary"]["steps"][1]["pause"]["duration"],
        "5m"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_prints_field_docs_for_custom_and_built_in_kinds() {
    let (cluster, _dir, kubeconfig) = setup().await;
    cluster
        .load_crds_from_dir(Path::new("../crds"))
        .expect("the repository's crds load");
    let out = kubectl_ok(&kubeconfig, &["explain", "widget.spec"]).await;
    assert!(out.contains("KIND:       Widget"), "{out}");
    assert!(out.contains("GROUP:      e2e.sluice.dev"), "{out}");
    assert!(out.contains("size\t<string> -required-"), "{out}");
    assert!(out.contains("replicas\t<integer>"), "{out}");

    let out = kubectl_ok(&kubeconfig, &["explain", "deployment.spec"]).await;
    assert!(out.contains("KIND:       Deployment"), "{out}");
    assert!(out.contains("FIELD: spec <DeploymentSpec>"), "{out}");
    assert!(
        out.contains("template\t<PodTemplateSpec> -required-"),
        "{out}"
    );
    assert!(
        out.contains("Number of desired pods."),
        "the description of spec.replicas: {out}"
    );

    let out = kubectl_ok(&kubeconfig, &["explain", "rollout.spec.strategy.canary"]).await;
    assert!(out.contains("KIND:       Rollout"), "{out}");
    assert!(out.contains("FIELD: canary <Object>"), "{out}");
    assert!(out.contains("steps\t<[]Object>"), "{out}");

    let (ok, _, stderr) = kubectl(&kubeconfig, &["explain", "widget.spec.nope"]).await;
    assert!(!ok);
    assert!(stderr.contains("field \"nope\" does not exist"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_v3_follows_crd_changes() {
    let (cluster, _dir, kubeconfig) = setup().await;
    let index: Value =
        serde_json::from_str(&kubectl_ok(&kubeconfig, &["get", "--raw", "/openapi/v3"]).await)
            .unwrap();
    let url = index["paths"]["apis/e2e.sluice.dev/v1"]["serverRelativeURL"]
        .as_str()
        .expect("the widget group-version is published")
        .to_string();
    assert!(
        url.starts_with("/openapi/v3/apis/e2e.sluice.dev/v1?hash="),
        "{url}"
    );
    assert!(index["paths"]["api/v1"].is_object());
    assert!(index["paths"]["apis/apps/v1"].is_object());
    assert!(index["paths"].get("apis/sluice.dev/v1alpha1").is_none());

    // A changed CRD changes its document, and so its hash.
    let mut crd = sluice_e2e::example_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["colour"] =
        serde_json::json!({"type": "string", "description": "The colour."});
    let client = cluster.client();
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
        client,
        &kube::api::ApiResource {
            group: "apiextensions.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiextensions.k8s.io/v1".into(),
            kind: "CustomResourceDefinition".into(),
            plural: "customresourcedefinitions".into(),
        },
    );
    api.patch(
        "widgets.e2e.sluice.dev",
        &kube::api::PatchParams::apply("test").force(),
        &kube::api::Patch::Apply(&crd),
    )
    .await
    .unwrap();
    cluster
        .load_crds_from_dir(Path::new("../crds"))
        .expect("the repository's crds load");
    let index: Value =
        serde_json::from_str(&kubectl_ok(&kubeconfig, &["get", "--raw", "/openapi/v3"]).await)
            .unwrap();
    let new_url = index["paths"]["apis/e2e.sluice.dev/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    assert_ne!(new_url, url);
    assert!(index["paths"]["apis/sluice.dev/v1alpha1"].is_object());
    let doc: Value =
        serde_json::from_str(&kubectl_ok(&kubeconfig, &["get", "--raw", new_url]).await).unwrap();
    assert_eq!(
        doc["components"]["schemas"]["dev.sluice.e2e.v1.Widget"]["properties"]["spec"]["properties"]
            ["colour"]["description"],
        "The colour."
    );
    assert_eq!(
        doc["components"]["schemas"]["dev.sluice.e2e.v1.Widget"]["x-kubernetes-group-version-kind"],
        serde_json::json!([{"group": "e2e.sluice.dev", "kind": "Widget", "version": "v1"}])
    );
}
