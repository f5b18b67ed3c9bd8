//! Traffic routing through the whole controller on the test cluster: Istio canaries (host and
//! subset level) with promotion and abort, and a GitOps engine re-applying Git every 200 ms
//! during a whole NGINX canary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_e2e::WriteRecord;
use sluice_test_support::controller::*;

fn istio(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn vs_api(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        env.ns(),
        &istio("VirtualService", "virtualservices"),
    )
}

fn dr_api(env: &Env) -> Api<DynamicObject> {
    Api::namespaced_with(
        env.client.clone(),
        env.ns(),
        &istio("DestinationRule", "destinationrules"),
    )
}

async fn create(api: &Api<DynamicObject>, yaml: &str) {
    let mut obj: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    // The namespace comes from the API: the test's own.
    obj.metadata.namespace = None;
    api.create(&PostParams::default(), &obj).await.unwrap();
}

async fn get(api: &Api<DynamicObject>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

/// (stable, canary) weights of the first HTTP route.
async fn vs_weights(env: &Env) -> (i64, i64) {
    let vs = get(&vs_api(env), "web").await;
    let route = &vs["spec"]["http"][0]["route"];
    (
        route[0]["weight"].as_i64().unwrap_or(-1),
        route[1]["weight"].as_i64().unwrap_or(-1),
    )
}

/// Every value `extract` reads from each version of object `name`, in order, taken from a watch:
/// unlike polling, a watch sees every version the API server stores, however briefly it lasted
/// and however loaded the machine is.
fn record_by_watch<K>(
    api: Api<K>,
    name: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
    extract: impl Fn(&K) -> Option<i64> + Send + 'static,
) -> (Arc<Mutex<Vec<i64>>>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::StreamExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(kube::runtime::watcher(api, config));
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
            let Ok(Some(event)) = next else { continue };
            if let Ok(
                kube::runtime::watcher::Event::Apply(obj)
                | kube::runtime::watcher::Event::InitApply(obj),
            ) = event
                && let Some(v) = extract(&obj)
            {
                let mut seen = out.lock().unwrap();
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
            }
        }
    });
    (seen, task)
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + patience(secs);
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_scaled_down(env: &Env, hash: &str) {
    wait_until("canary scaled down", 60, || async {
        env.pods_of(hash).await == 0
    })
    .await;
}

const HOST_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.example.com]
  http:
  - name: primary
    retries: {attempts: 3, perTryTimeout: 2s}
    route:
    - destination: {host: web-stable}
      weight: 100
    - destination: {host: web-canary}
      weight: 0
"#;

const ISTIO_HOST: &str = r#"
canaryService: web-canary
stableService: web-stable
abortScaleDownDelaySeconds: 1
scaleDownDelaySeconds: 1
trafficRouting:
  istio:
    virtualService: {name: web, routes: [primary]}
steps:
- setWeight: 20
- pause: {}
- setWeight: 60
- pause: {duration: 1s}
"#;

/// Position of the first write matching `pred`.
fn position(writes: &[WriteRecord], pred: impl Fn(&WriteRecord) -> bool) -> Option<usize> {
    writes.iter().position(pred)
}

fn scales_to_zero(w: &WriteRecord, hash: &str) -> bool {
    w.resource == "replicasets"
        && w.name.as_deref().is_some_and(|n| n.ends_with(hash))
        && w.body
            .as_ref()
            .is_some_and(|b| b.to_string().contains("\"replicas\":0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_host_level_canary_promotes_and_abort_sets_weight_zero_before_scaling_down() {
    if skip_on_real_cluster("needs the write log") {
        return;
    }
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), HOST_VS).await;
    env.create(&rollout("web", 4, "web:1", ISTIO_HOST)).await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    assert_eq!(vs_weights(&env).await, (100, 0));

    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "paused at 20", 60, |r| {
            step(r) == Some(1) && weight(r) == Some(20)
        })
        .await;
    let v2 = current(&r).unwrap();
    assert_eq!(vs_weights(&env).await, (80, 20));
    let vs = get(&vs_api(&env), "web").await;
    assert_eq!(
        vs["spec"]["http"][0]["retries"],
        json!({"attempts": 3, "perTryTimeout": "2s"})
    );
    assert_eq!(
        r.status.unwrap().canary.weights.unwrap().verified,
        Some(true)
    );

    env.promote("web").await;
    env.wait_for("web", "promoted", 60, |r| {
        stable(r).as_deref() == Some(v2.as_str()) && phase(r) == "Healthy" && weight(r) == Some(0)
    })
    .await;
    assert_eq!(vs_weights(&env).await, (100, 0));
    assert_eq!(
        env.service_hash("web-stable").await.as_deref(),
        Some(v2.as_str())
    );
    wait_scaled_down(&env, &v1).await;

    // A third version, aborted at 20%.
    env.set_image("web", "web:3").await;
    let r = env
        .wait_for("web", "v3 at 20", 60, |r| {
            step(r) == Some(1) && weight(r) == Some(20)
        })
        .await;
    let v3 = current(&r).unwrap();
    assert_eq!(vs_weights(&env).await, (80, 20));
    env.cluster.controls().clear_writes();
    env.patch_status("web", json!({"abort": true})).await;
    env.wait_for("web", "aborted", 60, |r| {
        phase(r) == "Degraded" && weight(r) == Some(0)
    })
    .await;
    wait_scaled_down(&env, &v3).await;
    assert_eq!(vs_weights(&env).await, (100, 0));
    assert_eq!(
        env.service_hash("web-canary").await.as_deref(),
        Some(v2.as_str())
    );

    let writes = env.cluster.controls().writes();
    let weight0 = position(&writes, |w| {
        w.resource == "virtualservices"
            && w.code == 200
            && w.body.as_ref().is_some_and(|b| {
                b.as_array()
                    .into_iter()
                    .flatten()
                    .any(|op| op["path"] == "/spec/http/0/route/1/weight" && op["value"] == 0)
            })
    })
    .expect("the weight goes back to 0");
    let scale = position(&writes, |w| scales_to_zero(w, &v3)).expect("the canary scales down");
    assert!(
        weight0 < scale,
        "weight 0 at write {weight0}, canary scaled down at write {scale}"
    );
}

const SUBSET_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: stable}
      weight: 100
    - destination: {host: web, subset: canary}
      weight: 0
"#;

const SUBSET_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  subsets:
  - name: stable
    labels: {app: web}
  - name: canary
    labels: {app: web}
  - name: debug
    labels: {app: web, debug: "true"}
"#;

const ISTIO_SUBSET: &str = r#"
canaryService: web-canary
stableService: web-stable
abortScaleDownDelaySeconds: 1
scaleDownDelaySeconds: 1
trafficRouting:
  istio:
    virtualService: {name: web}
    destinationRule: {name: web, canarySubsetName: canary, stableSubsetName: stable}
steps:
- setWeight: 30
- pause: {}
"#;

async fn subset_hashes(env: &Env) -> (Option<String>, Option<String>) {
    let dr = get(&dr_api(env), "web").await;
    let hash = |i: usize| {
        dr["spec"]["subsets"][i]["labels"][sluice::api::constants::POD_TEMPLATE_HASH_LABEL]
            .as_str()
            .map(str::to_string)
    };
    (hash(0), hash(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_subset_level_canary_moves_subsets_and_abort_restores_the_canary_subset() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), SUBSET_VS).await;
    create(&dr_api(&env), SUBSET_DR).await;
    env.create(&rollout("web", 2, "web:1", ISTIO_SUBSET)).await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    wait_until("stable subset on v1", 30, || async {
        subset_hashes(&env).await.0.as_deref() == Some(v1.as_str())
    })
    .await;

    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "paused at 30", 60, |r| {
            step(r) == Some(1) && weight(r) == Some(30)
        })
        .await;
    let v2 = current(&r).unwrap();
    assert_eq!(
        subset_hashes(&env).await,
        (Some(v1.clone()), Some(v2.clone()))
    );
    assert_eq!(vs_weights(&env).await, (70, 30));
    let dr = get(&dr_api(&env), "web").await;
    assert_eq!(
        dr["spec"]["subsets"][2],
        json!({"name": "debug", "labels": {"app": "web", "debug": "true"}})
    );

    env.patch_status("web", json!({"abort": true})).await;
    env.wait_for("web", "aborted", 60, |r| {
        phase(r) == "Degraded" && weight(r) == Some(0)
    })
    .await;
    wait_until("canary subset back on stable", 30, || async {
        subset_hashes(&env).await == (Some(v1.clone()), Some(v1.clone()))
    })
    .await;
    assert_eq!(vs_weights(&env).await, (100, 0));
    wait_scaled_down(&env, &v2).await;
    assert_eq!(
        subset_hashes(&env).await,
        (Some(v1.clone()), Some(v1.clone()))
    );
}

/// Argo Rollouts' `examples/istio/istio-subset-split.yaml`: subset-level routing with a named
/// route and neither `canaryService` nor `stableService`. The DestinationRule subsets alone
/// select the versions; the user's Service is never touched.
const ARGO_SUBSET_ONLY: &str = r#"
trafficRouting:
  istio:
    virtualService: {name: web, routes: [primary]}
    destinationRule: {name: web, canarySubsetName: canary, stableSubsetName: stable}
steps:
- setWeight: 10
- pause: {}
"#;

const NAMED_SUBSET_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - name: primary
    route:
    - destination: {host: web, subset: stable}
      weight: 100
    - destination: {host: web, subset: canary}
      weight: 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_subset_split_without_services_routes_by_subsets_only() {
    let env = Env::new().await;
    // The host's Service, as the example ships it: it selects every pod of the app.
    env.services(&["web"]).await;
    let user_selector = env.service_hash("web").await;
    create(&vs_api(&env), NAMED_SUBSET_VS).await;
    create(&dr_api(&env), SUBSET_DR).await;
    env.create(&rollout("web", 1, "web:1", ARGO_SUBSET_ONLY))
        .await;
    let r = env
        .wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    assert_eq!(invalid_spec_message(&r), None);
    let v1 = stable(&r).unwrap();
    wait_until("both subsets on v1", 30, || async {
        subset_hashes(&env).await == (Some(v1.clone()), Some(v1.clone()))
    })
    .await;

    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "paused at 10", 60, |r| {
            step(r) == Some(1) && weight(r) == Some(10) && phase(r) == "Paused"
        })
        .await;
    let v2 = current(&r).unwrap();
    assert_eq!(
        subset_hashes(&env).await,
        (Some(v1.clone()), Some(v2.clone()))
    );
    assert_eq!(vs_weights(&env).await, (90, 10));

    env.promote("web").await;
    // The canary subset keeps the traffic until the stable subset selects v2 too (both run v2
    // by then); only then does the weight go back to 0.
    env.wait_for("web", "promoted, weight back to 0", 60, |r| {
        phase(r) == "Healthy" && stable(r).as_deref() == Some(v2.as_str()) && weight(r) == Some(0)
    })
    .await;
    wait_until("both subsets on v2", 30, || async {
        subset_hashes(&env).await == (Some(v2.clone()), Some(v2.clone()))
    })
    .await;
    wait_until("all traffic on the stable subset", 30, || async {
        vs_weights(&env).await == (100, 0)
    })
    .await;
    assert_eq!(
        env.service_hash("web").await,
        user_selector,
        "the user's Service is not Sluice's to change"
    );
}

/// Git's version of the objects a GitOps engine keeps applying.
fn git_objects(ns: &str, image: &str) -> Vec<(&'static str, Value)> {
    let mut ro = serde_json::to_value(rollout("web", 3, image, GITOPS_NGINX)).unwrap();
    ro.as_object_mut().unwrap().remove("status");
    let service = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        })
    };
    // In the order an Argo CD sync applies them: Services and Ingresses before the Rollout.
    vec![
        ("service", service("web-stable")),
        ("service", service("web-canary")),
        (
            "ingress",
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "web", "namespace": ns,
                             "annotations": {"kubernetes.io/ingress.class": "nginx"}},
                "spec": {"rules": [{"host": "web.example", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}
                }]}}]}
            }),
        ),
        ("rollout", ro),
    ]
}

const GITOPS_NGINX: &str = r#"
canaryService: web-canary
stableService: web-stable
scaleDownDelaySeconds: 1
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setWeight: 20
- pause: {duration: 1s}
- setWeight: 50
- pause: {duration: 1s}
- setWeight: 80
- pause: {duration: 1s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_reapplying_git_every_200ms_does_not_disturb_a_canary() {
    let env = Env::new().await;
    let client = env.client.clone();
    let git_image = Arc::new(Mutex::new("web:1".to_string()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));

    // The GitOps engine: server-side apply of everything in Git, as its own field manager,
    // without forcing ownership, every 200 ms.
    let engine = {
        let (client, git_image, stop, errors, ns) = (
            client.clone(),
            git_image.clone(),
            stop.clone(),
            errors.clone(),
            env.ns().to_string(),
        );
        tokio::spawn(async move {
            let pp = PatchParams::apply("argocd-controller");
            let rollouts: Api<sluice::api::rollout::Rollout> = Api::namespaced(client.clone(), &ns);
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let image = git_image.lock().unwrap().clone();
                for (kind, obj) in git_objects(&ns, &image) {
                    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                    let result = match kind {
                        "rollout" => rollouts
                            .patch(&name, &pp, &Patch::Apply(&obj))
                            .await
                            .map(|_| ()),
                        "service" => services
                            .patch(&name, &pp, &Patch::Apply(&obj))
                            .await
                            .map(|_| ()),
                        _ => ingresses
                            .patch(&name, &pp, &Patch::Apply(&obj))
                            .await
                            .map(|_| ()),
                    };
                    if let Err(e) = result {
                        errors.lock().unwrap().push(format!("{kind}/{name}: {e}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Every canary weight the Ingress carried, from a watch.
    let (weights_seen, weight_watch) = record_by_watch(
        Api::<Ingress>::namespaced(client.clone(), env.ns()),
        "web-web-canary",
        stop.clone(),
        |i: &Ingress| {
            i.metadata
                .annotations
                .as_ref()?
                .get("nginx.ingress.kubernetes.io/canary-weight")?
                .parse()
                .ok()
        },
    );
    // What the data plane sees: the canary weight, and which version the stable Service selects.
    let samples = Arc::new(Mutex::new(Vec::<(Option<i32>, Option<String>)>::new()));
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        let ingresses: Api<Ingress> = Api::namespaced(client.clone(), env.ns());
        let services: Api<Service> = Api::namespaced(client.clone(), env.ns());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let weight = ingresses
                    .get_opt("web-web-canary")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|i| i.metadata.annotations)
                    .and_then(|a| a.get("nginx.ingress.kubernetes.io/canary-weight").cloned())
                    .and_then(|w| w.parse().ok());
                let hash = services
                    .get_opt("web-stable")
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| {
                        s.spec?
                            .selector?
                            .get(sluice::api::constants::POD_TEMPLATE_HASH_LABEL)
                            .cloned()
                    });
                samples.lock().unwrap().push((weight, hash));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let rollouts = env.rollouts();
    wait_until("the engine's first sync", 60, || async {
        rollouts.get_opt("web").await.ok().flatten().is_some()
    })
    .await;
    let r = env
        .wait_for("web", "v1 healthy", 120, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    // The service owner merges a new image into Git.
    *git_image.lock().unwrap() = "web:2".to_string();
    let r = env
        .wait_for("web", "v2 promoted", 120, |r| {
            phase(r) == "Healthy" && stable(r).is_some_and(|s| s != v1) && weight(r) == Some(0)
        })
        .await;
    let v2 = stable(&r).unwrap();
    // Keep re-applying a little longer after the end: nothing moves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    engine.await.unwrap();
    sampler.await.unwrap();
    weight_watch.await.unwrap();

    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "the GitOps engine hit conflicts: {errors:#?}"
    );
    assert_eq!(
        env.service_hash("web-stable").await.as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(env.nginx_weight("web").await, Some(0));

    // While v1 is stable, the canary weight only ever goes up; it drops to 0 only once the
    // stable Service selects v2.
    let samples = samples.lock().unwrap().clone();
    let before: Vec<i32> = samples
        .iter()
        .filter(|(_, h)| h.as_deref() == Some(v1.as_str()))
        .filter_map(|(w, _)| *w)
        .collect();
    assert!(
        before.windows(2).all(|p| p[0] <= p[1]),
        "the weight moved backwards during the rollout: {before:?}"
    );
    // Every step's weight was applied (the watch saw each version of the canary Ingress; the
    // polled samples above may miss a short-lived one on a loaded machine).
    let seen = weights_seen.lock().unwrap().clone();
    assert!(
        seen.contains(&20) && seen.contains(&50) && seen.contains(&80),
        "{seen:?}"
    );
    let after: Vec<i32> = samples
        .iter()
        .filter(|(_, h)| h.as_deref() == Some(v2.as_str()))
        .filter_map(|(w, _)| *w)
        .collect();
    assert_eq!(after.last(), Some(&0));
}

/// Every field path (`["spec", "http"]`) a manager owns according to `metadata.managedFields`.
fn owned_paths(live: &Value, manager: &str) -> Vec<Vec<String>> {
    fn walk(fields: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some(map) = fields.as_object() else {
            return;
        };
        let children: Vec<_> = map.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (k, v) in children {
            prefix.push(k[2..].to_string());
            walk(v, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    for entry in live["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if entry["manager"] == manager {
            walk(&entry["fieldsV1"], &mut Vec::new(), &mut out);
        }
    }
    out
}

/// What Argo CD applies with `ignoreDifferences: managedFieldsManagers: [sluice]` and
/// `RespectIgnoreDifferences=true`: Git's manifest, with the live value of every field `sluice`
/// manages.
fn respect_ignore_differences(git: &Value, live: Option<&Value>) -> Value {
    let mut out = git.clone();
    let Some(live) = live else { return out };
    for path in owned_paths(live, "sluice") {
        let pointer: String = path
            .iter()
            .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
            .collect();
        if let Some(value) = live.pointer(&pointer) {
            let mut at = &mut out;
            for key in &path[..path.len() - 1] {
                if !at.get(key.as_str()).is_some_and(Value::is_object) {
                    at[key.as_str()] = json!({});
                }
                at = &mut at[key.as_str()];
            }
            at[path[path.len() - 1].as_str()] = value.clone();
        }
    }
    out
}

const GITOPS_ISTIO: &str = r#"
canaryService: web-canary
stableService: web-stable
scaleDownDelaySeconds: 1
trafficRouting:
  istio:
    virtualService: {name: web}
    destinationRule: {name: web, canarySubsetName: canary, stableSubsetName: stable}
steps:
- setWeight: 25
- pause: {duration: 1s}
- setWeight: 75
- pause: {duration: 1s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_reapplying_istio_objects_every_200ms_does_not_disturb_a_canary() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    let client = env.client.clone();
    let git_image = Arc::new(Mutex::new("web:1".to_string()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut vs_git: Value = serde_yaml::from_str(SUBSET_VS).unwrap();
    let mut dr_git: Value = serde_yaml::from_str(SUBSET_DR).unwrap();
    vs_git["metadata"]["namespace"] = env.ns().into();
    dr_git["metadata"]["namespace"] = env.ns().into();

    let engine = {
        let (client, git_image, stop, errors, ns) = (
            client.clone(),
            git_image.clone(),
            stop.clone(),
            errors.clone(),
            env.ns().to_string(),
        );
        tokio::spawn(async move {
            let pp = PatchParams::apply("argocd-controller");
            let rollouts: Api<sluice::api::rollout::Rollout> = Api::namespaced(client.clone(), &ns);
            let vs: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &ns,
                &istio("VirtualService", "virtualservices"),
            );
            let dr: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &ns,
                &istio("DestinationRule", "destinationrules"),
            );
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (api, git) in [(&vs, &vs_git), (&dr, &dr_git)] {
                    // A write by Sluice between the read and the apply makes the apply conflict;
                    // like a failed sync, it is retried from a fresh read.
                    let mut last = None;
                    for _ in 0..5 {
                        let live = api
                            .get_opt("web")
                            .await
                            .ok()
                            .flatten()
                            .map(|o| serde_json::to_value(o).unwrap());
                        let config = respect_ignore_differences(git, live.as_ref());
                        match api.patch("web", &pp, &Patch::Apply(&config)).await {
                            Ok(_) => {
                                last = None;
                                break;
                            }
                            Err(e) => last = Some(e),
                        }
                    }
                    if let Some(e) = last {
                        errors.lock().unwrap().push(format!("{}: {e}", git["kind"]));
                    }
                }
                let image = git_image.lock().unwrap().clone();
                let mut ro = serde_json::to_value(rollout("web", 2, &image, GITOPS_ISTIO)).unwrap();
                ro.as_object_mut().unwrap().remove("status");
                if let Err(e) = rollouts.patch("web", &pp, &Patch::Apply(&ro)).await {
                    errors.lock().unwrap().push(format!("Rollout: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Every canary weight the VirtualService carried, from a watch.
    let (weights_seen, weight_watch) =
        record_by_watch(vs_api(&env), "web", stop.clone(), |v: &DynamicObject| {
            v.data["spec"]["http"][0]["route"][1]["weight"].as_i64()
        });
    // What the data plane sees: the canary weight, and the hash the stable subset selects.
    let samples = Arc::new(Mutex::new(Vec::<(i64, Option<String>)>::new()));
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        let vs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            env.ns(),
            &istio("VirtualService", "virtualservices"),
        );
        let dr: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            env.ns(),
            &istio("DestinationRule", "destinationrules"),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let v = vs
                    .get_opt("web")
                    .await
                    .ok()
                    .flatten()
                    .map(|o| serde_json::to_value(o).unwrap());
                let d = dr
                    .get_opt("web")
                    .await
                    .ok()
                    .flatten()
                    .map(|o| serde_json::to_value(o).unwrap());
                if let (Some(v), Some(d)) = (v, d) {
                    let canary = v["spec"]["http"][0]["route"][1]["weight"]
                        .as_i64()
                        .unwrap_or(0);
                    let stable = d["spec"]["subsets"][0]["labels"]
                        [sluice::api::constants::POD_TEMPLATE_HASH_LABEL]
                        .as_str()
                        .map(str::to_string);
                    samples.lock().unwrap().push((canary, stable));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let rollouts = env.rollouts();
    wait_until("the engine's first sync", 60, || async {
        rollouts.get_opt("web").await.ok().flatten().is_some()
    })
    .await;
    let r = env
        .wait_for("web", "v1 healthy", 120, |r| phase(r) == "Healthy")
        .await;
    let v1 = stable(&r).unwrap();
    *git_image.lock().unwrap() = "web:2".to_string();
    let r = env
        .wait_for("web", "v2 promoted", 120, |r| {
            phase(r) == "Healthy" && stable(r).is_some_and(|s| s != v1) && weight(r) == Some(0)
        })
        .await;
    let v2 = stable(&r).unwrap();
    wait_until("stable subset on v2", 30, || async {
        subset_hashes(&env).await == (Some(v2.clone()), Some(v2.clone()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    engine.await.unwrap();
    sampler.await.unwrap();
    weight_watch.await.unwrap();

    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "the GitOps engine hit conflicts: {errors:#?}"
    );
    assert_eq!(vs_weights(&env).await, (100, 0));
    let dr = get(&dr_api(&env), "web").await;
    assert_eq!(
        dr["spec"]["subsets"][2],
        json!({"name": "debug", "labels": {"app": "web", "debug": "true"}})
    );

    let samples = samples.lock().unwrap().clone();
    let before: Vec<i64> = samples
        .iter()
        .filter(|(_, h)| h.as_deref() == Some(v1.as_str()))
        .map(|(w, _)| *w)
        .collect();
    assert!(
        before.windows(2).all(|p| p[0] <= p[1]),
        "the weight moved backwards during the rollout: {before:?}"
    );
    let seen = weights_seen.lock().unwrap().clone();
    assert!(seen.contains(&25) && seen.contains(&75), "{seen:?}");
}

fn invalid_spec_message(r: &sluice::api::rollout::Rollout) -> Option<String> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec" && c.status == "True")
        .map(|c| c.message.clone())
}

/// An Argo Rollouts ALB canary: the API server keeps `alb` (it is not pruned into a Rollout
/// without routing), and the controller refuses it by name with what to use instead, creating
/// nothing. Switching to NGINX makes the same Rollout run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alb_rollout_is_refused_by_name_and_runs_once_switched_to_nginx() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let alb = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  alb: {ingress: web, servicePort: 80}
steps:
- setWeight: 20
- pause: {}
"#;
    env.create(&rollout("web", 2, "web:1", alb)).await;
    let r = env
        .wait_for("web", "InvalidSpec", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.starts_with(
            "spec.strategy.canary.trafficRouting.alb: AWS ALB traffic routing \
             (trafficRouting.alb) is not supported by Sluice; use trafficRouting.nginx, \
             trafficRouting.istio or trafficRouting.gatewayAPI"
        ),
        "{message}"
    );
    assert_eq!(phase(&r), "Degraded");
    assert!(env.replica_sets().await.is_empty(), "nothing created");

    env.patch_spec(
        "web",
        json!({"spec": {"strategy": {"canary": {"trafficRouting": {
            "alb": null, "nginx": {"stableIngress": "web"}
        }}}}}),
    )
    .await;
    env.wait_for("web", "healthy", 60, |r| {
        phase(r) == "Healthy" && invalid_spec_message(r).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stable_ingress_is_reported_and_the_rollout_resumes_once_it_exists() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.create(&rollout("web", 2, "web:1", NGINX)).await;
    let r = env
        .wait_for("web", "invalid reference", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.contains("spec.strategy.canary.trafficRouting.nginx.stableIngress")
            && message.contains("ingress 'web' not found"),
        "{message}"
    );
    let ingresses: Api<Ingress> = Api::namespaced(env.client.clone(), env.ns());
    assert!(ingresses.get_opt("web-web-canary").await.unwrap().is_none());

    // The watch on the referenced Ingress brings the Rollout back as soon as it appears.
    env.stable_ingress().await;
    env.wait_for("web", "healthy", 60, |r| {
        phase(r) == "Healthy" && invalid_spec_message(r).is_none()
    })
    .await;
    assert_eq!(env.nginx_weight("web").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_ingress_without_the_stable_service_changes_no_traffic() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout(
        "web",
        2,
        "web:1",
        &format!("{NGINX}steps:\n- setWeight: 40\n- pause: {{}}\n"),
    ))
    .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "weight 40", 60, |r| weight(r) == Some(40))
        .await;
    assert_eq!(env.nginx_weight("web").await, Some(40));

    // Someone points the stable Ingress elsewhere.
    let ingresses: Api<Ingress> = Api::namespaced(env.client.clone(), env.ns());
    ingresses
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"rules": [{"host": "web.example", "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "elsewhere", "port": {"number": 80}}}
                }]}}]}}),
            ),
        )
        .await
        .unwrap();
    let r = env
        .wait_for("web", "invalid reference", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.contains("ingress 'web' has no path with backend service 'web-stable'"),
        "{message}"
    );
    assert_eq!(env.nginx_weight("web").await, Some(40), "no traffic change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_destination_rule_subset_is_reported_by_name() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), SUBSET_VS).await;
    create(
        &dr_api(&env),
        &SUBSET_DR.replace("name: canary", "name: next"),
    )
    .await;
    env.create(&rollout("web", 2, "web:1", ISTIO_SUBSET)).await;
    let r = env
        .wait_for("web", "invalid reference", 60, |r| {
            invalid_spec_message(r).is_some()
        })
        .await;
    let message = invalid_spec_message(&r).unwrap();
    assert!(
        message.contains("spec.strategy.canary.trafficRouting.istio.destinationRule")
            && message.contains("subset 'canary' not found in destinationrule 'web'"),
        "{message}"
    );
    assert!(
        env.replica_sets().await.is_empty(),
        "nothing created while invalid"
    );
    assert_eq!(subset_hashes(&env).await, (None, None));
}

const EDGE_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge, namespace: default}
spec:
  hosts: [web.example.com]
  tls:
  - match: [{port: 443, sniHosts: [web.example.com]}]
    route:
    - destination: {host: web-stable}
      weight: 100
    - destination: {host: web-canary}
      weight: 0
  tcp:
  - match: [{port: 5432}]
    route:
    - destination: {host: web-stable}
      weight: 100
    - destination: {host: web-canary}
      weight: 0
"#;

/// Canary weights of the TLS and TCP routes of `edge`.
async fn edge_canary_weights(env: &Env) -> (i64, i64) {
    let vs = get(&vs_api(env), "edge").await;
    let w = |kind: &str| {
        vs["spec"][kind][0]["route"][1]["weight"]
            .as_i64()
            .unwrap_or(-1)
    };
    (w("tls"), w("tcp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_virtual_services_with_http_tls_and_tcp_routes_move_together_and_abort_restores_each() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), HOST_VS).await;
    create(&vs_api(&env), EDGE_VS).await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
abortScaleDownDelaySeconds: 1
trafficRouting:
  istio:
    virtualServices:
    - {name: web, routes: [primary]}
    - name: edge
      tlsRoutes: [{port: 443, sniHosts: [web.example.com]}]
      tcpRoutes: [{port: 5432}]
steps:
- setWeight: 35
- pause: {}
"#;
    env.create(&rollout("web", 2, "web:1", spec)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    let r = env
        .wait_for("web", "paused at 35", 60, |r| {
            step(r) == Some(1) && weight(r) == Some(35)
        })
        .await;
    let v2 = current(&r).unwrap();
    assert_eq!(vs_weights(&env).await, (65, 35));
    assert_eq!(edge_canary_weights(&env).await, (35, 35));

    env.patch_status("web", json!({"abort": true})).await;
    env.wait_for("web", "aborted", 60, |r| {
        phase(r) == "Degraded" && weight(r) == Some(0)
    })
    .await;
    wait_scaled_down(&env, &v2).await;
    assert_eq!(vs_weights(&env).await, (100, 0));
    assert_eq!(edge_canary_weights(&env).await, (0, 0));
}

const MANAGED_ROUTES: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  managedRoutes: [{name: beta-header}, {name: mirror-posts}]
  istio:
    virtualService: {name: web, routes: [primary]}
steps:
- setWeight: 10
- setHeaderRoute:
    name: beta-header
    match: [{headerName: x-beta, headerValue: {exact: "1"}}]
- setMirrorRoute:
    name: mirror-posts
    match: [{method: {exact: POST}}]
    percentage: 50
- pause: {}
"#;

fn http_route_names(vs: &Value) -> Vec<String> {
    vs["spec"]["http"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_mirror_steps_put_managed_routes_first_and_promotion_removes_them() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), HOST_VS).await;
    env.create(&rollout("web", 2, "web:1", MANAGED_ROUTES))
        .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused after the route steps", 60, |r| {
        step(r) == Some(3)
    })
    .await;
    wait_until("managed routes in place", 30, || async {
        http_route_names(&get(&vs_api(&env), "web").await)
            == ["beta-header", "mirror-posts", "primary"]
    })
    .await;
    let vs = get(&vs_api(&env), "web").await;
    assert_eq!(
        vs["spec"]["http"][0]["match"],
        json!([{"headers": {"x-beta": {"exact": "1"}}}])
    );
    assert_eq!(
        vs["spec"]["http"][1]["mirrorPercentage"],
        json!({"value": 50.0})
    );
    assert_eq!(
        vs["spec"]["http"][2]["retries"],
        json!({"attempts": 3, "perTryTimeout": "2s"})
    );

    env.promote("web").await;
    env.wait_for("web", "promoted", 60, |r| {
        phase(r) == "Healthy" && weight(r) == Some(0)
    })
    .await;
    wait_until("managed routes removed", 30, || async {
        http_route_names(&get(&vs_api(&env), "web").await) == ["primary"]
    })
    .await;
    assert_eq!(vs_weights(&env).await, (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_ingress_annotation_removed_from_the_rollout_is_removed_from_the_ingress() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    let spec = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx:
    stableIngress: web
    additionalIngressAnnotations:
      canary-by-header: X-Canary
"#;
    env.create(&rollout("web", 2, "web:1", spec)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let ingresses: Api<Ingress> = Api::namespaced(env.client.clone(), env.ns());
    let key = "nginx.ingress.kubernetes.io/canary-by-header";
    let annotation = || async {
        ingresses
            .get("web-web-canary")
            .await
            .unwrap()
            .metadata
            .annotations
            .unwrap_or_default()
            .get(key)
            .cloned()
    };
    assert_eq!(annotation().await.as_deref(), Some("X-Canary"));

    env.patch_spec(
        "web",
        json!({"spec": {"strategy": {"canary": {"trafficRouting": {"nginx": {"additionalIngressAnnotations": null}}}}}}),
    )
    .await;
    wait_until("stale annotation removed", 60, || async {
        annotation().await.is_none()
    })
    .await;
    assert_eq!(env.nginx_weight("web").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubectl_edit_of_the_canary_ingress_weight_is_reverted() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout(
        "web",
        2,
        "web:1",
        &format!("{NGINX}steps:\n- setWeight: 30\n- pause: {{}}\n"),
    ))
    .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused at 30", 60, |r| {
        step(r) == Some(1) && weight(r) == Some(30)
    })
    .await;
    let ingresses: Api<Ingress> = Api::namespaced(env.client.clone(), env.ns());
    ingresses
        .patch(
            "web-web-canary",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "nginx.ingress.kubernetes.io/canary-weight": "100"
            }}})),
        )
        .await
        .unwrap();
    // The controller watches the canary Ingress it owns: the edit is undone without waiting for a
    // periodic resync.
    wait_until("weight back to 30", 30, || async {
        env.nginx_weight("web").await == Some(30)
    })
    .await;
    let r = env.get("web").await;
    assert_eq!(step(&r), Some(1));
    assert_eq!(weight(&r), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_rollout_returns_its_virtual_service_to_stable() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), HOST_VS).await;
    env.create(&rollout("web", 2, "web:1", ISTIO_HOST)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let r = env.get("web").await;
    assert!(
        r.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"rollout.sluice.dev/traffic-cleanup".to_string()),
        "a Rollout with traffic routing carries the cleanup finalizer"
    );
    env.set_image("web", "web:2").await;
    env.wait_for("web", "weight 20", 60, |r| weight(r) == Some(20))
        .await;
    assert_eq!(vs_weights(&env).await, (80, 20));
    env.rollouts()
        .delete("web", &Default::default())
        .await
        .unwrap();
    wait_until("rollout gone", 60, || async {
        env.rollouts().get_opt("web").await.unwrap().is_none()
    })
    .await;
    assert_eq!(
        vs_weights(&env).await,
        (100, 0),
        "all traffic back to stable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_band_virtual_service_edit_is_corrected_at_once() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), HOST_VS).await;
    env.create(&rollout("web", 2, "web:1", ISTIO_HOST)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused at 20", 60, |r| {
        weight(r) == Some(20) && phase(r) == "Paused"
    })
    .await;
    // Someone edits the weights by hand; the watch on VirtualServices brings the Rollout back
    // to its weight without waiting for anything else to change.
    let patch = json!({"spec": {"http": [{"name": "primary", "retries": {"attempts": 3, "perTryTimeout": "2s"},
        "route": [{"destination": {"host": "web-stable"}, "weight": 50},
                  {"destination": {"host": "web-canary"}, "weight": 50}]}]}});
    vs_api(&env)
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_until("drift corrected", 30, || async {
        vs_weights(&env).await == (80, 20)
    })
    .await;
}

/// Whether the Rollout still carries the traffic finalizer or the routing record.
async fn routing_marks(env: &Env) -> (bool, bool) {
    let r = env.get("web").await;
    let finalizer = r
        .metadata
        .finalizers
        .unwrap_or_default()
        .iter()
        .any(|f| f == "rollout.sluice.dev/traffic-cleanup");
    let record = r
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("rollout.sluice.dev/managed-routing");
    (finalizer, record)
}

/// Argo e2e scenario 10 of issue "Argo's own e2e suite": removing `trafficRouting` from a live
/// Rollout mid-canary gives the VirtualService back (all traffic to stable), as deleting the
/// Rollout does, and the Rollout goes on without a router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_istio_routing_from_a_live_rollout_returns_the_virtual_service_to_stable() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    create(&vs_api(&env), HOST_VS).await;
    env.create(&rollout("web", 2, "web:1", ISTIO_HOST)).await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    assert_eq!(routing_marks(&env).await, (true, true));
    env.set_image("web", "web:2").await;
    env.wait_for("web", "weight 20", 60, |r| weight(r) == Some(20))
        .await;
    assert_eq!(vs_weights(&env).await, (80, 20));

    // The delays apply to routed canaries only: a user removing the router removes them too.
    env.patch_spec(
        "web",
        json!({"spec": {"strategy": {"canary": {
            "trafficRouting": null, "scaleDownDelaySeconds": null, "abortScaleDownDelaySeconds": null
        }}}}),
    )
    .await;
    wait_until("virtual service back to stable", 30, || async {
        vs_weights(&env).await == (100, 0)
    })
    .await;
    wait_until("finalizer and record gone", 30, || async {
        routing_marks(&env).await == (false, false)
    })
    .await;
    let vs = get(&vs_api(&env), "web").await;
    assert!(
        !vs["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.contains_key("rollout.sluice.dev/managed-by-rollouts")),
        "{vs}"
    );
    // Still a Rollout, now a basic canary: it completes by replica counts.
    env.promote("web").await;
    env.wait_for("web", "healthy on web:2", 60, |r| {
        phase(r) == "Healthy" && stable(r) == current(r)
    })
    .await;
    assert_eq!(vs_weights(&env).await, (100, 0), "never touched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_nginx_routing_from_a_live_rollout_deletes_the_canary_ingress() {
    let env = Env::new().await;
    env.services(&["web-stable", "web-canary"]).await;
    env.stable_ingress().await;
    env.create(&rollout(
        "web",
        2,
        "web:1",
        &format!("{NGINX}steps:\n- setWeight: 30\n- pause: {{}}\n"),
    ))
    .await;
    env.wait_for("web", "healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "paused at 30", 60, |r| weight(r) == Some(30))
        .await;
    let ingresses: Api<Ingress> = Api::namespaced(env.client.clone(), env.ns());
    assert!(ingresses.get_opt("web-web-canary").await.unwrap().is_some());
    env.patch_spec(
        "web",
        json!({"spec": {"strategy": {"canary": {
            "trafficRouting": null, "scaleDownDelaySeconds": null, "abortScaleDownDelaySeconds": null
        }}}}),
    )
    .await;
    wait_until("canary ingress deleted", 30, || async {
        ingresses.get_opt("web-web-canary").await.unwrap().is_none()
    })
    .await;
    wait_until("finalizer and record gone", 30, || async {
        routing_marks(&env).await == (false, false)
    })
    .await;
    assert!(
        ingresses.get_opt("web").await.unwrap().is_some(),
        "the user's Ingress stays"
    );
}
