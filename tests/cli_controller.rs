//! The `sluice` binary driving the real controller on the test cluster: set image, status,
//! promote, abort, explain, retry and promote --full, each as a user would type them, with the
//! controller reacting to the CLI's patches.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use sluice::api::rollout::Rollout;
use sluice::controller::{self, ControllerConfig};
use sluice_test_support::cli::{self, text};
use sluice_test_support::controller::{Setup, Target, start_controller};
use sluice_test_support::tools::Tmux;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

async fn sluice(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Ok(cli::sluice(env!("CARGO_BIN_EXE_sluice"), kubeconfig, args).await?)
}

/// Runs a command that must succeed; returns its standard output.
async fn ok(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = sluice(kubeconfig, args).await?;
    if out.status.code() != Some(0) {
        return Err(format!(
            "sluice {args:?} exited {:?}: {}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        )
        .into());
    }
    Ok(text(&out.stdout))
}

/// `sluice get rollout web -o json`, polled until `cond` holds (generous: a loaded machine).
async fn wait_view(kubeconfig: &Path, what: &str, cond: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v: Value =
            serde_json::from_str(&ok(kubeconfig, &["get", "rollout", "web", "-o", "json"]).await?)?;
        if cond(&v) {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}: {v:#}").into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The cluster with pods that start in 200 ms on the test cluster, Sluice's CRDs, and no Istio.
async fn cluster() -> Target {
    Target::start(Setup {
        simulation: true,
        pod_ready_delay: Some(Duration::from_millis(200)),
        crds: true,
        istio: false,
    })
    .await
}

/// The cluster with Services, the stable Ingress, a running controller and Rollout `web`
/// (web:1, two indefinite pauses).
async fn start() -> Result<(Target, controller::Running)> {
    let cluster = cluster().await;
    let client = cluster.client();
    let services: Api<Service> = Api::namespaced(client.clone(), &cluster.ns);
    for name in ["web-stable", "web-canary"] {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))?;
        services.create(&PostParams::default(), &svc).await?;
    }
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &cluster.ns);
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"kubernetes.io/ingress.class": "nginx"}},
        "spec": {"rules": [{"host": "web.example", "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}
        }]}}]}
    }))?;
    ingresses.create(&PostParams::default(), &ing).await?;
    let running = start_controller(&cluster, ControllerConfig::default()).await;

    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &cluster.ns);
    let ro: Rollout = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": cluster.ns},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            "strategy": {"canary": {
                "canaryService": "web-canary", "stableService": "web-stable",
                "abortScaleDownDelaySeconds": 1, "scaleDownDelaySeconds": 1,
                "trafficRouting": {"nginx": {"stableIngress": "web"}},
                "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
            }}
        }
    }))?;
    rollouts.create(&PostParams::default(), &ro).await?;
    Ok((cluster, running))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_steers_a_rollout_through_the_controller() -> Result {
    let (cluster, _controller) = start().await?;
    let dir = tempfile::tempdir()?;
    let kc = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kc)?;

    // First version: status waits for Healthy and exits 0.
    let said = ok(&kc, &["status", "web", "--timeout", "2m"]).await?;
    assert!(said.ends_with("Healthy\n"), "{said}");

    // A new image: the controller walks to the first pause; --fail-on-pause exits 2 there.
    let said = ok(&kc, &["set", "image", "web", "web=web:2"]).await?;
    assert_eq!(
        said,
        "rollout \"web\": image of web set to web:2; a new revision starts rolling out\n"
    );
    let out = sluice(
        &kc,
        &["status", "web", "--fail-on-pause", "--timeout", "2m"],
    )
    .await?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let v = wait_view(&kc, "paused at step 2 with 25%", |v| {
        v["phase"] == "Paused" && v["currentStepIndex"] == 1 && v["actualWeight"] == 25
    })
    .await?;
    assert_eq!(v["revisions"][0]["images"][0], "web:2");
    assert_eq!(v["revisions"][0]["role"], "canary");

    // promote: on to the second pause at 50%.
    let said = ok(&kc, &["promote", "web"]).await?;
    assert!(
        said.starts_with("rollout \"web\" promoted: pause at step 2 of 4"),
        "{said}"
    );
    wait_view(&kc, "paused at step 4 with 50%", |v| {
        v["phase"] == "Paused" && v["currentStepIndex"] == 3 && v["actualWeight"] == 50
    })
    .await?;

    // abort: Degraded, traffic back to 0; status exits 1; explain says so.
    ok(&kc, &["abort", "web"]).await?;
    let out = sluice(&kc, &["status", "web", "--timeout", "2m"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    wait_view(&kc, "aborted with no canary traffic", |v| {
        v["phase"] == "Degraded" && v["actualWeight"] == 0
    })
    .await?;
    let said = ok(&kc, &["explain", "web"]).await?;
    assert!(said.starts_with("Aborted"), "{said}");
    assert!(said.contains("Traffic to the canary is 0%."), "{said}");
    assert!(
        said.contains(&format!(
            "Run `sluice retry web -n {}` after a fix",
            cluster.ns
        )),
        "{said}"
    );
    let out = sluice(&kc, &["promote", "web"]).await?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "promote of an aborted update is refused"
    );

    // retry: from the first step again; then promote --full to the end.
    ok(&kc, &["retry", "web"]).await?;
    wait_view(&kc, "retried to the first pause", |v| {
        v["phase"] == "Paused" && v["currentStepIndex"] == 1 && v["actualWeight"] == 25
    })
    .await?;
    let said = ok(&kc, &["promote", "web", "--full"]).await?;
    assert!(said.starts_with("rollout \"web\" fully promoted"), "{said}");
    let said = ok(&kc, &["status", "web", "--timeout", "2m"]).await?;
    assert!(said.ends_with("Healthy\n"), "{said}");
    let v = wait_view(&kc, "web:2 stable", |v| {
        v["revisions"][0]["role"] == "stable" && v["revisions"][0]["images"][0] == "web:2"
    })
    .await?;
    assert_eq!(v["phase"], "Healthy");
    let out = sluice(&kc, &["abort", "web"]).await?;
    assert_eq!(
        text(&out.stderr),
        "error: rollout \"web\" has no update in progress; there is nothing to abort\n"
    );
    Ok(())
}

/// `get --watch` in tmux while the controller moves the rollout: the pane shows the step and the
/// weight change, redrawn in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_controller_driven_rollout_in_tmux() -> Result {
    let (cluster, _controller) = start().await?;
    let dir = tempfile::tempdir()?;
    let kc = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kc)?;
    ok(&kc, &["status", "web", "--timeout", "2m"]).await?;

    let tmux = Tmux::new(
        format!("sluice-ctl-watch-{}", std::process::id()),
        Duration::from_secs(120),
    )?;
    let command = format!(
        "env TERM=xterm-256color KUBECONFIG={} {} get rollout web --watch --timeout 5m",
        kc.display(),
        env!("CARGO_BIN_EXE_sluice")
    );
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "w",
        "-x",
        "140",
        "-y",
        "50",
        &command,
    ])?;
    let healthy = tmux.wait_for("w", &["✔ Healthy", "revision 1"]).await?;
    println!("--- healthy ---\n{healthy}");

    ok(&kc, &["set", "image", "web", "web=web:2"]).await?;
    let paused = tmux
        .wait_for(
            "w",
            &[
                "॥ Paused",
                "  Step:         2/4",
                "ActualWeight: 25",
                "revision 2",
            ],
        )
        .await?;
    println!("--- first pause ---\n{paused}");
    assert!(
        paused.contains("▶   2. pause: until promoted  <- current"),
        "{paused}"
    );

    ok(&kc, &["promote", "web"]).await?;
    let second = tmux
        .wait_for("w", &["  Step:         4/4", "ActualWeight: 50"])
        .await?;
    println!("--- second pause ---\n{second}");
    assert_eq!(
        second.matches("Name:").count(),
        1,
        "redrawn in place:\n{second}"
    );
    assert!(!second.contains("ActualWeight: 25"), "{second}");
    assert!(!second.contains("✔ Healthy"), "{second}");
    Ok(())
}

/// A stand-in for Prometheus' instant-query API that always answers one sample, `value`.
async fn fake_prometheus(value: &'static str) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(move || async move {
            axum::Json(
                json!({"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [1.0, value]}
                ]}}),
            )
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

/// An analysis step fails on a low success rate; `explain` names the step, the metric, the
/// value, the threshold, the count and the limit, as the controller left them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_measurement_that_aborted_a_real_rollout() -> Result {
    let prometheus = fake_prometheus("0.82").await?;
    let cluster = cluster().await;
    let client = cluster.client();
    let config = ControllerConfig {
        prometheus: sluice::metrics::prometheus::PrometheusConfig {
            allowlist: sluice::metrics::prometheus::AddressAllowlist::new([prometheus.as_str()])?,
            default_address: None,
        },
        ..ControllerConfig::default()
    };
    let _controller = start_controller(&cluster, config).await;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("web.yaml");
    let namespace = &cluster.ns;
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: web
  namespace: {namespace}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: web:1
  strategy:
    canary:
      steps:
      - setWeight: 50
      - analysis:
          templates:
          - templateName: success-rate
      - pause: {{}}
---
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
  namespace: {namespace}
spec:
  metrics:
  - name: success-rate
    interval: 1s
    count: 3
    failureLimit: 1
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: {prometheus}
        query: sum(rate(http_requests_total{{code!~"5.."}}[1m])) / sum(rate(http_requests_total[1m]))
"#
        ),
    )?;
    // What is applied passes lint first, as in a GitOps pipeline.
    let kc = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kc)?;
    let linted = ok(&kc, &["lint", "-f", &manifest.to_string_lossy()]).await?;
    assert!(linted.starts_with("ok: 2 objects"), "{linted}");
    for doc in std::fs::read_to_string(&manifest)?.split("\n---\n") {
        let value: Value = serde_yaml::from_str(doc)?;
        match value["kind"].as_str() {
            Some("Rollout") => {
                let ro: Rollout = serde_json::from_value(value)?;
                Api::<Rollout>::namespaced(client.clone(), &cluster.ns)
                    .create(&PostParams::default(), &ro)
                    .await?;
            }
            _ => {
                let t: sluice::api::analysis::AnalysisTemplate = serde_json::from_value(value)?;
                Api::<sluice::api::analysis::AnalysisTemplate>::namespaced(
                    client.clone(),
                    &cluster.ns,
                )
                .create(&PostParams::default(), &t)
                .await?;
            }
        }
    }
    ok(&kc, &["status", "web", "--timeout", "2m"]).await?;
    ok(&kc, &["set", "image", "web", "web=web:2"]).await?;
    let out = sluice(
        &kc,
        &["status", "web", "--fail-on-pause", "--timeout", "2m"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1), "aborted: {}", text(&out.stdout));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let said = loop {
        let said = ok(&kc, &["explain", "web"]).await?;
        if said.contains("because metric") || tokio::time::Instant::now() > deadline {
            break said;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!("{said}");
    assert!(said.starts_with("Aborted at step 2 of 3 at "), "{said}");
    assert!(
        said.contains(" because metric success-rate measured [0.82], below 0.95, twice (limit 1) in AnalysisRun "),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "Run `sluice retry web -n {}` after a fix",
            cluster.ns
        )),
        "{said}"
    );
    let tree = ok(&kc, &["get", "rollout", "web"]).await?;
    println!("{tree}");
    assert!(
        tree.contains("Failure:        metric success-rate measured [0.82]"),
        "{tree}"
    );
    assert!(
        tree.contains("  ✖   2. analysis: success-rate  <- aborted here"),
        "{tree}"
    );
    assert!(!tree.contains("<- current"), "{tree}");
    Ok(())
}
