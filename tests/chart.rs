//! The Helm chart (`charts/sluice`), rendered and linted by real Helm (the `helm-python-sdk`
//! package embeds Helm's Go library; `charts/tests/helm_render.py` drives it), then checked here:
//! the Deployment's args go through the controller's own flag parser, RBAC grants exactly what
//! the controller uses, the pod is locked down, and the manifests are applied to the test
//! cluster where the rendered pods run the real `sluice controller`, elect one leader and roll
//! out a routed canary using only requests the chart's RBAC grants. The test cluster serves no
//! RBAC or NetworkPolicy API and enforces no RBAC: the test installs
//! schema-less stand-in CRDs for those kinds (and the Prometheus Operator's) so that every
//! rendered object is applied, and checks permissions against the request log instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice::controller::ControllerArgs;
use sluice::controller::args::LogFormat;
use sluice_e2e::{PodInfo, PodProcess, TestCluster};
use sluice_test_support::cli::kubectl;
use sluice_test_support::metrics;
use sluice_test_support::tools::require_tool;

const NAMESPACE: &str = "sluice-system";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the Helm SDK with pip when it is missing; panics (never skips) when that fails.
fn ensure_helm_sdk() {
    let has = || {
        Command::new("python3")
            .args(["-c", "import helm_python"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return;
    }
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "helm-python-sdk"])
            .args(extra)
            .output()
            .expect("python3 is needed to run Helm (helm-python-sdk)")
    };
    let mut out = pip(&[]);
    if !out.status.success() {
        // A distribution's Python refuses plain `pip install` (PEP 668).
        out = pip(&["--user", "--break-system-packages"]);
    }
    assert!(
        out.status.success() && has(),
        "pip install helm-python-sdk failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lints and renders the chart once per test binary; returns the output directory.
fn rendered() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        ensure_helm_sdk();
        let dir = tempfile::tempdir().unwrap().keep();
        let out = Command::new("python3")
            .arg(repo().join("charts/tests/helm_render.py"))
            .arg(repo().join("charts/sluice"))
            .arg(&dir)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "helm lint/render failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(rendered().join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind} expected");
    found[0]
}

fn container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// `sluice <args>` as the binary parses it: the first arg must be the `controller` subcommand,
/// the rest go through `ControllerArgs`, the controller's real flag parser.
#[derive(Parser, Debug)]
struct Sluice {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    Controller(ControllerArgs),
}

fn parse(args: &[String]) -> ControllerArgs {
    let argv = std::iter::once("sluice".to_string()).chain(args.iter().cloned());
    match Sluice::try_parse_from(argv) {
        Ok(Sluice {
            command: Sub::Controller(a),
        }) => a,
        Err(e) => panic!("the chart's args {args:?} are refused by the controller: {e}"),
    }
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let list = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    };
    let top = list(&repo().join("crds"));
    let chart = list(&repo().join("charts/sluice/crds"));
    assert_eq!(
        top.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "charts/sluice/crds must hold the same files as crds/ (cp crds/*.yaml charts/sluice/crds/)"
    );
    for (name, text) in &top {
        assert!(
            chart[name] == *text,
            "charts/sluice/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/sluice/crds/"
        );
    }
    // And Helm loads exactly those as the chart's CRDs.
    let names: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(rendered().join("crd-names.json")).unwrap())
            .unwrap();
    let expected: Vec<String> = top.keys().map(|n| format!("crds/{n}")).collect();
    assert_eq!(names, expected);
}

#[test]
fn default_args_parse_with_the_controller_flag_parser() {
    let docs = docs("default.yaml");
    let args = args_of(&docs);
    assert_eq!(args[0], "controller");
    let a = parse(&args);
    assert_eq!(a.namespace, None, "cluster-wide by default");
    assert_eq!(a.instance_id, None);
    assert!(a.leader_elect);
    assert_eq!(a.lease_duration_seconds, 15);
    assert_eq!(a.log_format, LogFormat::Json);
    assert_eq!(a.admin_address.to_string(), "0.0.0.0:8090");
    assert_eq!(a.qps, 40.0);
    assert_eq!(a.burst, 80);
    assert!(a.metric_address_allow.is_empty());
    assert_eq!(a.istio_api_version, "networking.istio.io/v1");
    a.to_config()
        .expect("the default flags make a valid configuration");
    let c = container(&docs);
    assert_eq!(c["ports"][0]["name"], "admin");
    assert_eq!(c["ports"][0]["containerPort"], 8090);
    assert_eq!(c["image"], "ghcr.io/sluice-dev/sluice:0.1.0");
    // The Lease namespace and identity come from the downward API (env of the real parser).
    let env: BTreeMap<&str, &str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["valueFrom"]["fieldRef"]["fieldPath"]
                    .as_str()
                    .unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(env.get("POD_NAMESPACE"), Some(&"metadata.namespace"));
    assert_eq!(env.get("POD_NAME"), Some(&"metadata.name"));
}

#[test]
fn custom_values_reach_the_controller_flags() {
    let docs = docs("custom.yaml");
    let a = parse(&args_of(&docs));
    assert_eq!(a.namespace.as_deref(), Some("shop"));
    assert_eq!(a.instance_id.as_deref(), Some("blue"));
    assert_eq!(a.log_format, LogFormat::Text);
    assert_eq!(a.log_level, "debug,kube=info");
    assert_eq!(a.qps, 12.5);
    assert_eq!(a.burst, 30);
    assert_eq!(
        a.metric_address_allow,
        vec![
            "http://prometheus.monitoring:9090",
            "https://thanos.example.com"
        ]
    );
    assert_eq!(
        a.default_prometheus_address.as_deref(),
        Some("http://prometheus.monitoring:9090")
    );
    assert_eq!(a.istio_api_version, "networking.istio.io/v1beta1");
    assert_eq!(a.rollout_workers, 4);
    assert_eq!(a.analysis_workers, 6);
    assert_eq!(a.lease_duration_seconds, 20);
    assert_eq!(a.lease_name, "shop-lock");
    assert_eq!(a.admin_address.port(), 9100);
    let config = a.to_config().expect("valid configuration");
    assert_eq!(
        config.lease.as_ref().map(|l| l.name.as_str()),
        Some("shop-lock-blue"),
        "the instance id is appended to the Lease name"
    );
    let c = container(&docs);
    assert_eq!(c["ports"][0]["containerPort"], 9100);
    assert_eq!(c["image"], "registry.example.com/sluice:v9");
    assert_eq!(one(&docs, "Deployment")["spec"]["replicas"], 3);
    assert_eq!(one(&docs, "Service")["spec"]["ports"][0]["port"], 9100);
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 2);
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus");
    let rules = one(&docs, "PrometheusRule");
    let alerts: BTreeSet<&str> = rules["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        alerts,
        BTreeSet::from([
            "SluiceControllerNotLeading",
            "SluiceReconcileErrors",
            "SluiceRolloutDegraded",
            "SluiceRolloutStuckProgressing"
        ])
    );
    let file: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/sluice/files/sluice-alerts.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rules["spec"], file,
        "the PrometheusRule carries the promtool-checked file"
    );
    let np = one(&docs, "NetworkPolicy");
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], "admin");
    // Notifications: the allowlist flags, and the ConfigMap and Secret under the names the
    // controller reads, in its namespace, parsed by the controller's own parser.
    assert!(a.notifications);
    assert_eq!(
        a.notification_url_allow,
        vec!["https://hooks.slack.com/", "https://slack.com/api/"]
    );
    let cm = find(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["name"] == sluice::notifications::CONFIG_MAP_NAME)
        .expect("the notification ConfigMap");
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    let secret = one(&docs, "Secret");
    assert_eq!(
        secret["metadata"]["name"],
        sluice::notifications::SECRET_NAME
    );
    assert_eq!(secret["metadata"]["namespace"], NAMESPACE);
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(cm["data"].clone()).unwrap();
    let secret_data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(secret["stringData"].clone()).unwrap();
    let parsed = sluice::notifications::config::Config::parse(&data, &secret_data)
        .expect("the chart's example configuration parses");
    assert!(parsed.services.contains_key("slack"));
    assert_eq!(
        parsed.default_triggers,
        vec!["on-rollout-aborted", "on-rollout-completed"]
    );
}

#[test]
fn a_flag_the_controller_does_not_know_is_caught() {
    // The check above is only worth something if a wrong flag fails it.
    let mut args = args_of(&docs("default.yaml"));
    args.push("--lease-namespaces=x".into());
    let argv = std::iter::once("sluice".to_string()).chain(args);
    assert!(Sluice::try_parse_from(argv).is_err());
}

#[test]
fn pod_is_locked_down_and_highly_available() {
    for file in ["default.yaml", "custom.yaml"] {
        let docs = docs(file);
        let deploy = one(&docs, "Deployment");
        let pod = &deploy["spec"]["template"]["spec"];
        let c = container(&docs);
        assert!(deploy["spec"]["replicas"].as_i64().unwrap() >= 2);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        for k in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    c["resources"][k][r].is_string(),
                    "{file}: resources.{k}.{r}"
                );
            }
        }
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
        assert_eq!(
            one(&docs, "ServiceAccount")["metadata"]["name"],
            pod["serviceAccountName"]
        );
        let pdb = one(&docs, "PodDisruptionBudget");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"],
            deploy["spec"]["selector"]["matchLabels"]
        );
    }
    let default = docs("default.yaml");
    assert_eq!(one(&default, "Deployment")["spec"]["replicas"], 2);
    assert!(find(&default, "ServiceMonitor").is_empty());
    assert!(find(&default, "PrometheusRule").is_empty());
    assert!(find(&default, "NetworkPolicy").is_empty());
}

/// (group, resource, verb) triples a role grants; panics on wildcards.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in rule["apiGroups"].as_array().unwrap() {
            for r in rule["resources"].as_array().unwrap() {
                for v in rule["verbs"].as_array().unwrap() {
                    let (g, r, v) = (
                        g.as_str().unwrap(),
                        r.as_str().unwrap(),
                        v.as_str().unwrap(),
                    );
                    assert!(g != "*" && r != "*" && v != "*", "wildcard in {role}");
                    assert!(rule.get("resourceNames").is_none());
                    out.insert((g.to_string(), r.to_string(), v.to_string()));
                }
            }
        }
    }
    out
}

fn triples(spec: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    spec.iter()
        .flat_map(|(g, r, vs)| {
            vs.iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

/// Exactly what the controller reads and writes in the namespaces it reconciles.
const NAMESPACED: &[(&str, &str, &[&str])] = &[
    ("sluice.dev", "rollouts", &["get", "list", "watch", "patch"]),
    ("sluice.dev", "rollouts/status", &["update", "patch"]),
    ("sluice.dev", "rollouts/finalizers", &["update"]),
    (
        "sluice.dev",
        "analysisruns",
        &["create", "get", "list", "watch", "patch", "delete"],
    ),
    ("sluice.dev", "analysisruns/status", &["update"]),
    ("sluice.dev", "analysistemplates", &["get", "list", "watch"]),
    (
        "apps",
        "replicasets",
        &["create", "get", "list", "watch", "patch", "delete"],
    ),
    ("apps", "deployments", &["get", "list", "watch", "patch"]),
    (
        "batch",
        "jobs",
        &["create", "get", "list", "watch", "delete"],
    ),
    ("", "pods", &["list", "patch"]),
    ("", "pods/eviction", &["create"]),
    ("", "services", &["get", "list", "watch", "patch"]),
    (
        "networking.k8s.io",
        "ingresses",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("", "events", &["create", "patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];
const ISTIO: &[(&str, &str, &[&str])] = &[
    (
        "networking.istio.io",
        "virtualservices",
        &["get", "list", "watch", "patch"],
    ),
    (
        "networking.istio.io",
        "destinationrules",
        &["get", "list", "watch", "patch"],
    ),
];
/// Routes are patched, never created or deleted; ReferenceGrants only read.
const GATEWAY_API: &[(&str, &str, &[&str])] = &[
    (
        "gateway.networking.k8s.io",
        "httproutes",
        &["get", "list", "watch", "patch"],
    ),
    (
        "gateway.networking.k8s.io",
        "grpcroutes",
        &["get", "list", "watch", "patch"],
    ),
    (
        "gateway.networking.k8s.io",
        "tcproutes",
        &["get", "list", "watch", "patch"],
    ),
    (
        "gateway.networking.k8s.io",
        "tlsroutes",
        &["get", "list", "watch", "patch"],
    ),
    (
        "gateway.networking.k8s.io",
        "referencegrants",
        &["get", "list", "watch"],
    ),
];
const SECRETS: &[(&str, &str, &[&str])] = &[("", "secrets", &["get"])];
const CLUSTER_TEMPLATES: &[(&str, &str, &[&str])] = &[(
    "sluice.dev",
    "clusteranalysistemplates",
    &["get", "list", "watch"],
)];
const LEASES: &[(&str, &str, &[&str])] = &[
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
    // The notification ConfigMap and Secret, read by name.
    ("", "configmaps", &["get"]),
    ("", "secrets", &["get"]),
];

fn bound_to_service_account(binding: &Value, role: &Value, docs: &[Value]) {
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["roleRef"]["kind"], role["kind"]);
    let sa = one(docs, "ServiceAccount");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
}

#[test]
fn rbac_cluster_wide_grants_exactly_what_the_controller_uses() {
    let docs = docs("default.yaml");
    let cluster_role = one(&docs, "ClusterRole");
    let mut want = triples(NAMESPACED);
    want.extend(triples(ISTIO));
    want.extend(triples(GATEWAY_API));
    want.extend(triples(SECRETS));
    want.extend(triples(CLUSTER_TEMPLATES));
    assert_eq!(grants(cluster_role), want);
    bound_to_service_account(one(&docs, "ClusterRoleBinding"), cluster_role, &docs);
    let lease_role = one(&docs, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(grants(lease_role), triples(LEASES));
    bound_to_service_account(one(&docs, "RoleBinding"), lease_role, &docs);
    // Pods only listed, evicted (restarts honour PodDisruptionBudgets) and patched (ephemeral
    // labels and annotations), never deleted or replaced; never a Rollout's spec; Secrets only
    // by name.
    let all = grants(cluster_role);
    let pod_rights: BTreeSet<(String, String)> = all
        .iter()
        .filter(|(g, r, _)| g.is_empty() && r.starts_with("pods"))
        .map(|(_, r, v)| (r.clone(), v.clone()))
        .collect();
    assert_eq!(
        pod_rights,
        BTreeSet::from([
            ("pods".to_string(), "list".to_string()),
            ("pods".to_string(), "patch".to_string()),
            ("pods/eviction".to_string(), "create".to_string()),
        ])
    );
    assert!(!all.iter().any(|(g, r, v)| g == "sluice.dev"
        && r == "rollouts"
        && ["update", "create", "delete"].contains(&v.as_str())));
    // Each rule carries a comment saying why (read from the template source).
    let source = std::fs::read_to_string(repo().join("charts/sluice/templates/_rbac.tpl")).unwrap();
    let lines: Vec<&str> = source.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("- apiGroups:") {
            let above = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim_start().starts_with("{{"))
                .unwrap();
            assert!(
                above.trim_start().starts_with('#') || above.trim_start().starts_with("verbs:"),
                "rule at line {} of _rbac.tpl has no comment",
                i + 1
            );
        }
    }
}

#[test]
fn rbac_with_watch_namespace_is_namespace_scoped() {
    let docs = docs("custom.yaml");
    let roles = find(&docs, "Role");
    let ns_role = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "shop")
        .expect("a Role in the watched namespace");
    // rbac.secrets, rbac.istio and rbac.gatewayAPI are off in this scenario.
    assert_eq!(grants(ns_role), triples(NAMESPACED));
    let lease_role = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == NAMESPACE)
        .expect("the leader-election Role");
    assert_eq!(grants(lease_role), triples(LEASES));
    // The only cluster-wide grant left is reading ClusterAnalysisTemplates.
    let cluster_role = one(&docs, "ClusterRole");
    assert_eq!(grants(cluster_role), triples(CLUSTER_TEMPLATES));
    for binding in find(&docs, "RoleBinding") {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["name"] == binding["roleRef"]["name"])
            .unwrap();
        assert_eq!(
            binding["metadata"]["namespace"],
            role["metadata"]["namespace"]
        );
        bound_to_service_account(binding, role, &docs);
    }
    bound_to_service_account(one(&docs, "ClusterRoleBinding"), cluster_role, &docs);
}

/// CRDs standing in for built-in kinds the test cluster does not serve (RBAC,
/// NetworkPolicy) and for the Prometheus Operator's, so every rendered object is applied.
fn install_stand_in_crds(cluster: &TestCluster) {
    let kinds = [
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            "Cluster",
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            "Cluster",
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            "Namespaced",
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            "Namespaced",
        ),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            "Namespaced",
        ),
        (
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
            "servicemonitors",
            "Namespaced",
        ),
        (
            "monitoring.coreos.com",
            "v1",
            "PrometheusRule",
            "prometheusrules",
            "Namespaced",
        ),
    ];
    for (group, version, kind, plural, scope) in kinds {
        cluster
            .install_crd(json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.{group}")},
                "spec": {
                    "group": group,
                    "scope": scope,
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                    "versions": [{
                        "name": version, "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {
                            "type": "object", "x-kubernetes-preserve-unknown-fields": true
                        }}
                    }]
                }
            }))
            .unwrap_or_else(|e| panic!("stand-in CRD for {kind}: {e}"));
    }
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_chart_runs_one_leader_that_rolls_out_within_its_rbac() {
    let dir = rendered();
    let cluster = TestCluster::start().await.unwrap();
    install_stand_in_crds(&cluster);
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).unwrap();

    // Each pod of the rendered Deployment runs the real controller binary with the rendered
    // args; only the admin address moves to a free loopback port (pods share this host).
    let kc = kubeconfig.clone();
    let ports: Arc<Mutex<BTreeMap<String, u16>>> = Arc::default();
    let pod_ports = ports.clone();
    cluster.set_pod_runner(move |pod: PodInfo| {
        let kc = kc.clone();
        let pod_ports = pod_ports.clone();
        async move {
            if pod.labels.get("app.kubernetes.io/name").map(String::as_str) != Some("sluice") {
                // The Rollout's own pods: no process.
                return Ok(PodProcess::new(None, ()));
            }
            let c = &pod.pod["spec"]["containers"][0];
            let port = free_port();
            let args: Vec<String> = c["args"]
                .as_array()
                .ok_or("no args")?
                .iter()
                .map(|a| {
                    let a = a.as_str().unwrap_or_default();
                    if a.starts_with("--admin-address=") {
                        format!("--admin-address=127.0.0.1:{port}")
                    } else {
                        a.to_string()
                    }
                })
                .collect();
            let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(&args)
                .env("KUBECONFIG", &kc)
                .env("POD_NAME", &pod.name)
                .env("POD_NAMESPACE", &pod.namespace)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| e.to_string())?;
            pod_ports.lock().unwrap().insert(pod.name.clone(), port);
            Ok(PodProcess::new(Some(port), child))
        }
    });

    let kubectl_at = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&kubeconfig, &args)
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    kubectl_at(s(&["create", "namespace", NAMESPACE]))
        .await
        .unwrap();
    for file in ["crds.yaml", "custom.yaml", "default.yaml"] {
        if file == "custom.yaml" {
            for ns in ["shop", "monitoring"] {
                kubectl_at(s(&["create", "namespace", ns])).await.unwrap();
            }
        }
        let path = dir.join(file).to_string_lossy().into_owned();
        let mut args = s(&[
            "apply",
            "--server-side",
            "--validate=false",
            "--field-manager=helm",
            "-f",
            &path,
        ]);
        if file == "custom.yaml" {
            // Only checked to be accepted (server-side dry run): only the default release runs,
            // and no pod of the custom release may start (its pods would run controllers too).
            args.push("--dry-run=server".into());
        }
        let out = kubectl_at(args).await.unwrap();
        assert!(!out.is_empty(), "{file}: nothing applied");
    }
    // Two pods become ready; exactly one holds the Lease, and its /metrics says so.
    let mut holder = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let ready = cluster
            .object("apps", "deployments", NAMESPACE, "sluice")
            .and_then(|d| d["status"]["readyReplicas"].as_i64())
            .unwrap_or(0);
        let lease = cluster.object(
            "coordination.k8s.io",
            "leases",
            NAMESPACE,
            "sluice-controller-lock",
        );
        let h = lease.and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from));
        if ready == 2 && h.is_some() {
            holder = h;
            break;
        }
    }
    let holder = holder.expect("two ready replicas and a Lease holder within 30 s");
    // The pods the runner started for the chart's Deployment (read without kubectl, so that
    // the request log below holds only the controller's reads).
    let pods: Vec<String> = ports.lock().unwrap().keys().cloned().collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(
        pods.contains(&holder),
        "the Lease holder is one of the chart's pods"
    );
    // Each replica's /metrics: sluice_leader is 1 on the holder and 0 on the other.
    let mut leaders = BTreeMap::new();
    for _ in 0..40 {
        leaders.clear();
        for pod in &pods {
            let port = ports.lock().unwrap().get(pod).copied();
            let Some(port) = port else { continue };
            if let Some(v) = metrics::scrape(loopback(port), "sluice_leader", &[]).await {
                leaders.insert(pod.clone(), v);
            }
        }
        if leaders.len() == 2 && leaders.values().sum::<f64>() == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        leaders.len(),
        2,
        "both replicas serve /metrics: {leaders:?}"
    );
    assert_eq!(leaders.get(&holder), Some(&1.0), "{leaders:?}");
    assert_eq!(leaders.values().sum::<f64>(), 1.0, "{leaders:?}");
    // The probes' paths answer on both replicas, the standby included (so a rolling update of
    // the controller, which waits for readiness, goes through).
    for pod in &pods {
        let port = ports.lock().unwrap()[pod];
        for path in ["/healthz", "/readyz"] {
            // Readiness follows the caches' first sync, which may land after /metrics answers.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while metrics::get_ok(loopback(port), path).await.is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{pod}: {path} is not 200"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }

    // The CRDs from the chart serve Rollouts, and the installed controller walks an update with
    // traffic routing through it (Services, the canary Ingress, ReplicaSets, status, Events).
    let apply_rollout = |image: &str| {
        let path = tmp.path().join(format!("rollout-{image}.yaml"));
        std::fs::write(&path, ROLLOUT.replace("IMAGE", image)).unwrap();
        kubectl_at(s(&[
            "apply",
            "--server-side",
            "--validate=false",
            "-f",
            &path.to_string_lossy(),
        ]))
    };
    let settled = |cluster: &TestCluster, image: &str| {
        let ro = cluster.object("sluice.dev", "rollouts", "default", "web");
        ro.is_some_and(|r| {
            let st = &r["status"];
            r["spec"]["template"]["spec"]["containers"][0]["image"] == image
                && st["phase"] == "Healthy"
                && st["stableRS"].is_string()
                && st["stableRS"] == st["currentPodHash"]
        })
    };
    for image in ["web:1", "web:2"] {
        apply_rollout(image).await.unwrap();
        let mut done = false;
        for _ in 0..240 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if settled(&cluster, image) {
                done = true;
                break;
            }
        }
        let ro = cluster.object("sluice.dev", "rollouts", "default", "web");
        assert!(
            done,
            "the chart's controller rolls out {image}: {:#}",
            ro.map(|r| r["status"].clone()).unwrap_or_default()
        );
    }
    let canary_ingress = cluster.object(
        "networking.k8s.io",
        "ingresses",
        "default",
        "web-web-canary",
    );
    assert!(canary_ingress.is_some(), "the canary Ingress was created");

    // Least privilege, checked against what the controller actually asked for: every request it
    // made is granted by the chart's RBAC.
    let docs = docs("default.yaml");
    let mut granted = grants(one(&docs, "ClusterRole"));
    granted.extend(grants(one(&docs, "Role")));
    let mut used = BTreeSet::new();
    for w in cluster.writes() {
        if w.user_agent.as_deref().unwrap_or("").starts_with("kubectl") {
            continue;
        }
        let resource = match &w.subresource {
            Some(sub) => format!("{}/{sub}", w.resource),
            None => w.resource.clone(),
        };
        if w.resource == "rollouts" && w.subresource.is_none() {
            // The only write to a Rollout itself: its finalizer and, with it, the record of the
            // routing it guards (JSON patch on metadata.finalizers and that one annotation).
            let ops = w
                .body
                .as_ref()
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            assert!(
                !ops.is_empty()
                    && ops.iter().all(|op| {
                        let path = op["path"].as_str().unwrap_or_default();
                        op["op"] == "test"
                            || path.starts_with("/metadata/finalizers")
                            || path == "/metadata/annotations/rollout.sluice.dev~1managed-routing"
                            || (path == "/metadata/annotations"
                                && op["value"].as_object().is_some_and(|a| {
                                    a.keys().all(|k| k == "rollout.sluice.dev/managed-routing")
                                }))
                    }),
                "the controller wrote more than the finalizer of a Rollout: {:?}",
                w.body
            );
        }
        used.insert((w.group.clone(), resource, w.verb.clone()));
    }
    let group_of = |plural: &str| -> Option<&'static str> {
        Some(match plural {
            "rollouts" | "analysisruns" | "analysistemplates" | "clusteranalysistemplates" => {
                "sluice.dev"
            }
            "replicasets" | "deployments" => "apps",
            "jobs" => "batch",
            "services" | "secrets" | "configmaps" | "pods" | "endpoints" | "namespaces" => "",
            "ingresses" => "networking.k8s.io",
            "leases" => "coordination.k8s.io",
            "virtualservices" | "destinationrules" => "networking.istio.io",
            "httproutes" | "grpcroutes" | "tcproutes" | "tlsroutes" | "referencegrants" => {
                "gateway.networking.k8s.io"
            }
            _ => return None,
        })
    };
    for key in cluster.request_counts().keys() {
        let Some((verb, plural)) = key.split_once(' ') else {
            continue;
        };
        if !["get", "list", "watch"].contains(&verb) {
            continue;
        }
        // kubectl's own reads (discovery, CRDs, namespaces) are not the controller's.
        if let Some(group) = group_of(plural)
            && plural != "namespaces"
        {
            used.insert((group.to_string(), plural.to_string(), verb.to_string()));
        }
    }
    assert!(
        !used.iter().any(|(_, r, _)| r.starts_with("pods")),
        "the controller never touches Pods: {used:?}"
    );
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "the controller made requests the chart's RBAC does not grant: {missing:?}\nused: {used:#?}"
    );
    for needed in [
        ("sluice.dev", "rollouts/status", "update"),
        ("apps", "replicasets", "create"),
        ("networking.k8s.io", "ingresses", "create"),
        ("", "services", "patch"),
        ("coordination.k8s.io", "leases", "create"),
        // Templates are watched, so that creating or fixing one resumes the Rollouts it held.
        ("sluice.dev", "analysistemplates", "watch"),
        ("sluice.dev", "clusteranalysistemplates", "watch"),
    ] {
        let t = (
            needed.0.to_string(),
            needed.1.to_string(),
            needed.2.to_string(),
        );
        assert!(used.contains(&t), "the run exercised {needed:?}: {used:#?}");
    }
}

const ROLLOUT: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web-stable, namespace: default}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: default}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web-stable, port: {number: 80}}}}
---
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "IMAGE"}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting: {nginx: {stableIngress: web}}
      steps:
      - setWeight: 50
      - pause: {duration: 1s}
"#;

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    require_tool("promtool", "prometheus");
    for args in [
        vec!["check", "rules", "charts/sluice/files/sluice-alerts.yaml"],
        vec!["test", "rules", "charts/tests/sluice-alerts.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every series name the controller exports (counters get `_total`, histograms their parts).
fn exported_series() -> BTreeSet<String> {
    use sluice::controller::metrics::*;
    // A family shows in the exposition once it has a series: give each one.
    let m = Metrics::new();
    let controller = ControllerLabels {
        controller: "rollout".into(),
    };
    m.reconciles.get_or_create(&controller).inc();
    m.reconcile_duration.get_or_create(&controller).observe(0.1);
    m.reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "rollout".into(),
            category: "kube".into(),
        })
        .inc();
    m.set_rollout(
        RolloutInfoLabels {
            namespace: "ns".into(),
            name: "web".into(),
            phase: "Progressing".into(),
            strategy: "canary".into(),
            traffic_router: "nginx".into(),
        },
        Some(20),
    );
    m.set_analysis("ns", "web-1", vec![("rate".into(), "Running".into())]);
    m.measurements
        .get_or_create(&ResultLabels {
            result: "Successful".into(),
        })
        .inc();
    let text = m.encode();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    assert!(out.contains("sluice_leader"), "{text}");
    out
}

/// Checks a PromQL expression parses and names only exported series.
fn check_query(expr: &str, exported: &BTreeSet<String>, origin: &str) {
    // Grafana's variables, as Grafana substitutes them.
    let expr = expr
        .replace("$__rate_interval", "5m")
        .replace("$namespace", ".*")
        .replace("$job", ".*");
    promql_parser::parser::parse(&expr)
        .unwrap_or_else(|e| panic!("{origin}: {expr} does not parse: {e}"));
    let names = regex::Regex::new(r"\bsluice_[a-z_]+").unwrap();
    let mut any = false;
    for m in names.find_iter(&expr) {
        any = true;
        assert!(
            exported.contains(m.as_str()),
            "{origin}: {} is not a metric the controller exports ({exported:?})",
            m.as_str()
        );
    }
    assert!(any, "{origin}: {expr} queries no Sluice metric");
}

#[test]
fn dashboard_and_alerts_query_only_metrics_the_controller_exports() {
    let exported = exported_series();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("charts/sluice/dashboards/sluice.json")).unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    let series = regex::Regex::new(r"\bsluice_[a-z_]+").unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            check_query(expr, &exported, &format!("dashboard panel {title}"));
            for m in series.find_iter(expr) {
                queried.insert(m.as_str().trim_end_matches("_bucket").to_string());
            }
        }
    }
    // What the dashboard must show: phases, weights, analysis, latency, errors, leader.
    for needed in [
        "sluice_rollout_info",
        "sluice_rollout_canary_weight",
        "sluice_analysis_measurements_total",
        "sluice_analysis_run_metric_phase",
        "sluice_reconcile_duration_seconds",
        "sluice_reconcile_errors_total",
        "sluice_reconcile_total",
        "sluice_leader",
    ] {
        assert!(
            queried.contains(needed),
            "the dashboard shows nothing of {needed}"
        );
    }
    let rules: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/sluice/files/sluice-alerts.yaml")).unwrap(),
    )
    .unwrap();
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        check_query(
            rule["expr"].as_str().unwrap(),
            &exported,
            &format!("alert {name}"),
        );
    }
    // The chart ships the same dashboard file in its ConfigMap.
    let docs = docs("custom.yaml");
    let cm = find(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboard ConfigMap");
    let shipped: Value = serde_json::from_str(cm["data"]["sluice.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard);
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
}
