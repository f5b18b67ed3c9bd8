//! The simulated workloads: ReplicaSets, Deployments, the kubelet's readiness, endpoints, pod
//! processes, garbage collection and namespace deletion.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_e2e::{CRASH_LOOP, NEVER_READY, PodProcess, SimSettings, TestCluster};

fn replicaset(name: &str, replicas: i32, annotations: Value) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"name": "http", "containerPort": 8080}]}]}
            }
        }
    }))
    .unwrap()
}

async fn pods_of(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn replicaset_creates_ready_pods_and_reports_honest_status() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let rs = rs_api
        .create(&PostParams::default(), &replicaset("web", 3, json!({})))
        .await
        .unwrap();
    eventually("3 available replicas", || async {
        let s = rs_api.get("web").await.unwrap().status.unwrap_or_default();
        s.replicas == 3 && s.ready_replicas == Some(3) && s.available_replicas == Some(3)
    })
    .await;
    let all = pods_of(&pods, "web").await;
    assert_eq!(all.len(), 3);
    for pod in &all {
        assert!(ready(pod));
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Running")
        );
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["tier"], "web");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            (
                "ReplicaSet",
                rs.metadata.uid.as_deref().unwrap(),
                Some(true)
            )
        );
        assert!(pod.metadata.name.as_ref().unwrap().starts_with("web-"));
    }

    // Scale down through the scale subresource.
    let scale: Scale =
        serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}}))
            .unwrap();
    rs_api
        .replace_scale("web", &PostParams::default(), &scale)
        .await
        .unwrap();
    eventually("scaled down to 1 pod", || async {
        pods_of(&pods, "web").await.len() == 1
    })
    .await;
    eventually("status follows", || async {
        let s = rs_api.get("web").await.unwrap().status.unwrap_or_default();
        s.replicas == 1 && s.available_replicas == Some(1)
    })
    .await;
    let scale = rs_api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
}

#[tokio::test]
async fn annotated_pods_never_become_ready_or_crash_loop() {
    let cluster = TestCluster::builder()
        .sim_settings(SimSettings {
            crash_restart_interval: Duration::from_millis(100),
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let client = cluster.client();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    rs_api
        .create(
            &PostParams::default(),
            &replicaset("stuck", 2, json!({NEVER_READY: "true"})),
        )
        .await
        .unwrap();
    rs_api
        .create(
            &PostParams::default(),
            &replicaset("crashy", 1, json!({CRASH_LOOP: "true"})),
        )
        .await
        .unwrap();
    eventually("stuck pods running", || async {
        let p = pods_of(&pods, "stuck").await;
        p.len() == 2
            && p.iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    eventually("crashy pod restarted at least twice", || async {
        pods_of(&pods, "crashy").await.iter().any(|p| {
            let c = &p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            c.first().is_some_and(|c| {
                c.restart_count >= 2
                    && c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
            })
        })
    })
    .await;
    for app in ["stuck", "crashy"] {
        assert!(pods_of(&pods, app).await.iter().all(|p| !ready(p)));
        let status = rs_api.get(app).await.unwrap().status.unwrap_or_default();
        assert_eq!(status.ready_replicas, None, "{app}");
        assert_eq!(status.available_replicas, None, "{app}");
    }
}

/// `spec.readinessGates`: a pod whose containers run is Ready only once someone sets each gate's
/// condition True through the status subresource (what Argo's e2e `MarkPodsReady` does); the
/// kubelet keeps that condition when it next writes the status.
#[tokio::test]
async fn readiness_gates_hold_a_pod_unready_until_their_condition_is_true() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut rs = serde_json::to_value(replicaset("gated", 2, json!({}))).unwrap();
    rs["spec"]["template"]["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/ready"}]);
    rs_api
        .create(&PostParams::default(), &serde_json::from_value(rs).unwrap())
        .await
        .unwrap();
    eventually("gated pods running with ready containers", || async {
        let p = pods_of(&pods, "gated").await;
        p.len() == 2
            && p.iter().all(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "ContainersReady" && c.status == "True")
                    })
            })
    })
    .await;
    let listed = pods_of(&pods, "gated").await;
    assert!(listed.iter().all(|p| !ready(p)));
    let reason = listed[0]
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("ReadinessGatesNotReady"));

    let name = listed[0].metadata.name.clone().unwrap();
    let mut pod = pods.get_status(&name).await.unwrap();
    let status = pod.status.get_or_insert_with(Default::default);
    status.conditions.get_or_insert_with(Vec::new).push(
        serde_json::from_value(json!({"type": "example.com/ready", "status": "True"})).unwrap(),
    );
    pods.replace_status(&name, &PostParams::default(), &pod)
        .await
        .unwrap();
    eventually("the marked pod is ready", || async {
        pods.get(&name).await.map(|p| ready(&p)).unwrap_or(false)
    })
    .await;
    eventually("the ReplicaSet counts one ready pod", || async {
        let s = rs_api
            .get("gated")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        s.ready_replicas == Some(1) && s.available_replicas == Some(1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pod = pods.get(&name).await.unwrap();
    assert!(ready(&pod), "the kubelet kept the gate's condition");
    let others: Vec<Pod> = pods_of(&pods, "gated")
        .await
        .into_iter()
        .filter(|p| p.metadata.name.as_deref() != Some(name.as_str()))
        .collect();
    assert!(others.iter().all(|p| !ready(p)));
}

#[tokio::test]
async fn replicaset_created_while_the_simulation_lags_behind_still_gets_its_pods() {
    // A short history: the event buffer then holds 4,096 events.
    let cluster = TestCluster::builder()
        .watch_history(100)
        .start()
        .await
        .unwrap();
    // The simulation's first pass (which lists everything) is behind it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rs = serde_json::to_value(replicaset("late", 2, json!({}))).unwrap();
    rs["apiVersion"] = json!("apps/v1");
    rs["kind"] = json!("ReplicaSet");
    // Seeded straight into the store, then more changes than the simulation's event buffer
    // holds, all before it runs again (no await in between): the ReplicaSet's own event is
    // lost to it, and its next pass must list again to find the ReplicaSet.
    cluster.apply_object(rs).unwrap();
    for i in 0..6000 {
        cluster
            .apply_object(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("filler-{i}"), "namespace": "default"}
            }))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = cluster
            .object("apps", "replicasets", "default", "late")
            .unwrap()["status"]
            .clone();
        if status["readyReplicas"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ReplicaSet never got its pods: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn min_ready_seconds_delays_availability_under_a_paused_clock() {
    let cluster = TestCluster::start().await.unwrap();
    let mut rs = serde_json::to_value(replicaset("slow", 2, json!({}))).unwrap();
    rs["apiVersion"] = json!("apps/v1");
    rs["kind"] = json!("ReplicaSet");
    rs["spec"]["minReadySeconds"] = json!(30);
    // Seeded straight into the store: no HTTP under a paused clock.
    cluster.apply_object(rs).unwrap();
    let status = |cluster: &TestCluster| {
        cluster
            .object("apps", "replicasets", "default", "slow")
            .unwrap()["status"]
            .clone()
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status(&cluster)["readyReplicas"], 2);
    assert!(
        status(&cluster).get("availableReplicas").is_none(),
        "{}",
        status(&cluster)
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        status(&cluster).get("availableReplicas").is_none(),
        "still inside minReadySeconds"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(status(&cluster)["availableReplicas"], 2);
}

#[tokio::test]
async fn deployment_owns_a_replicaset_per_template_and_scales_to_zero() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "api", "image": "api:1"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    eventually("deployment available", || async {
        let s = deployments
            .get("api")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        s.available_replicas == Some(2)
            && s.updated_replicas == Some(2)
            && s.observed_generation == Some(1)
    })
    .await;
    let owned = rs_api
        .list(&ListParams::default().labels("app=api"))
        .await
        .unwrap()
        .items;
    assert_eq!(owned.len(), 1);
    let first_hash = owned[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        owned[0].metadata.owner_references.as_ref().unwrap()[0].kind,
        "Deployment"
    );

    deployments
        .patch("api", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:2"}]}}}})))
        .await
        .unwrap();
    eventually("new replicaset takes over", || async {
        let all = rs_api
            .list(&ListParams::default().labels("app=api"))
            .await
            .unwrap()
            .items;
        all.len() == 2
            && all.iter().all(|rs| {
                let is_old =
                    rs.metadata.labels.as_ref().unwrap()["pod-template-hash"] == first_hash;
                let replicas = rs.spec.as_ref().unwrap().replicas;
                (is_old && replicas == Some(0)) || (!is_old && replicas == Some(2))
            })
    })
    .await;

    // A workloadRef consumer scales the Deployment down to zero through /scale.
    deployments
        .patch_scale(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually("no pods left", || async {
        pods_of(&pods, "api").await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn endpoints_follow_ready_pods() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    rs_api
        .create(&PostParams::default(), &replicaset("web", 2, json!({})))
        .await
        .unwrap();
    let addresses = |ready: bool| {
        let endpoints = endpoints.clone();
        async move {
            let Ok(ep) = endpoints.get("web").await else {
                return Vec::new();
            };
            let mut out: Vec<(String, i32)> = Vec::new();
            for subset in ep.subsets.unwrap_or_default() {
                let port = subset
                    .ports
                    .as_ref()
                    .and_then(|p| p.first())
                    .map(|p| p.port)
                    .unwrap_or(0);
                let list = if ready {
                    subset.addresses
                } else {
                    subset.not_ready_addresses
                };
                out.extend(
                    list.unwrap_or_default()
                        .into_iter()
                        .map(|a| (a.target_ref.unwrap().name.unwrap(), port)),
                );
            }
            out.sort();
            out
        }
    };
    eventually(
        "two ready endpoints on the named container port",
        || async {
            let ready = addresses(true).await;
            ready.len() == 2 && ready.iter().all(|(_, port)| *port == 8080)
        },
    )
    .await;
    let victim = pods_of(&pods, "web").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    pods.patch(
        &victim,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {NEVER_READY: "true"}}})),
    )
    .await
    .unwrap();
    eventually("the unready pod moves to notReadyAddresses", || async {
        addresses(false).await == vec![(victim.clone(), 8080)] && addresses(true).await.len() == 1
    })
    .await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    eventually("endpoint slices agree", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .unwrap();
        let mut ready = Vec::new();
        let mut unready = Vec::new();
        for slice in list.items {
            for ep in slice.endpoints {
                let name = ep.target_ref.unwrap().name.unwrap();
                if ep.conditions.and_then(|c| c.ready) == Some(true) {
                    ready.push(name)
                } else {
                    unready.push(name)
                }
            }
        }
        ready.len() == 1 && unready == vec![victim.clone()]
    })
    .await;
    let view = cluster.endpoints("default", "web");
    assert_eq!(view.iter().filter(|e| e.ready).count(), 1);
    assert_eq!(view.iter().find(|e| !e.ready).unwrap().pod, victim);
}

/// A stand-in for an app process: a loopback listener that answers every connection with a line.
async fn serve_pod(name: String) -> Result<PodProcess, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(format!("{name}\n").as_bytes()).await;
        }
    });
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    Ok(PodProcess::new(Some(port), AbortOnDrop(task)))
}

async fn read_line(port: u16) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut out = String::new();
    socket.read_to_string(&mut out).await.ok()?;
    Some(out.trim().to_string()).filter(|s| !s.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runner_backs_each_ready_pod_with_a_process() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.set_pod_runner(|pod: sluice_e2e::PodInfo| serve_pod(pod.name));
    let client = cluster.client();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    rs_api
        .create(&PostParams::default(), &replicaset("web", 2, json!({})))
        .await
        .unwrap();
    eventually("two ready pods with processes", || async {
        let eps = cluster.endpoints("default", "web");
        eps.len() == 2
            && eps
                .iter()
                .all(|e| e.ready && e.process_port.is_some() && e.ip == "127.0.0.1")
    })
    .await;
    let eps = cluster.endpoints("default", "web");
    for ep in &eps {
        assert_eq!(
            read_line(ep.process_port.unwrap()).await.as_deref(),
            Some(ep.pod.as_str())
        );
    }
    let all = pods_of(&pods, "web").await;
    assert!(
        all.iter()
            .all(|p| p.status.as_ref().unwrap().pod_ip.as_deref() == Some("127.0.0.1"))
    );

    rs_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    for ep in eps {
        let port = ep.process_port.unwrap();
        eventually("process stopped with its pod", || async move {
            read_line(port).await.is_none()
        })
        .await;
    }
}

#[tokio::test]
async fn deleting_a_replicaset_collects_its_pods_and_namespaces_empty_out() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.client();
    let ns = namespace(&client, "gc").await;
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    rs_api
        .create(&PostParams::default(), &replicaset("web", 2, json!({})))
        .await
        .unwrap();
    eventually("pods created", || async {
        pods_of(&pods, "web").await.len() == 2
    })
    .await;
    rs_api
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    eventually("pods collected", || async {
        pods_of(&pods, "web").await.is_empty()
    })
    .await;

    rs_api
        .create(&PostParams::default(), &replicaset("again", 1, json!({})))
        .await
        .unwrap();
    eventually("pod created", || async {
        pods_of(&pods, "again").await.len() == 1
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    let refused = rs_api
        .create(&PostParams::default(), &replicaset("late", 1, json!({})))
        .await;
    // Either still terminating (403) or already gone (404).
    assert!(matches!(code(refused), 403 | 404));
    eventually("namespace gone", || async {
        matches!(namespaces.get(&ns).await, Err(kube::Error::Api(s)) if s.code == 404)
    })
    .await;
    assert!(cluster.store().namespace_contents(&ns).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_runner_starts_a_real_process_per_pod_with_its_environment() {
    // A one-line HTTP server in python3 (part of the base system) echoing its pod's environment.
    let script = r#"
import http.server, os
body = (os.environ["POD_NAME"] + " " + os.environ["POD_IMAGE"] + " " + os.environ["POD_LABEL_APP"]).encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;
    let cluster = TestCluster::start().await.unwrap();
    cluster.set_pod_runner(sluice_e2e::ProcessRunner::new("python3", ["-c", script]));
    let rs_api: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
    let services: Api<Service> = Api::namespaced(cluster.client(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    rs_api
        .create(&PostParams::default(), &replicaset("web", 2, json!({})))
        .await
        .unwrap();
    eventually("two ready pods backed by processes", || async {
        let eps = cluster.endpoints("default", "web");
        eps.len() == 2 && eps.iter().all(|e| e.ready && e.process_port.is_some())
    })
    .await;
    for ep in cluster.endpoints("default", "web") {
        let port = ep.process_port.unwrap();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(
            response.ends_with(&format!("{} app:1 web", ep.pod)),
            "{response}"
        );
    }
    let ports: Vec<u16> = cluster
        .endpoints("default", "web")
        .iter()
        .filter_map(|e| e.process_port)
        .collect();
    rs_api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    for port in ports {
        eventually("process killed with its pod", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        })
        .await;
    }
}

#[tokio::test]
async fn deleted_pods_terminate_gracefully_unless_forced() {
    let cluster = TestCluster::builder()
        .sim_settings(SimSettings {
            pod_termination_delay: Duration::from_secs(3600),
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    let client = cluster.client();
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    rs_api
        .create(&PostParams::default(), &replicaset("web", 1, json!({})))
        .await
        .unwrap();
    eventually("one ready pod", || async {
        pods_of(&pods, "web")
            .await
            .iter()
            .filter(|p| ready(p))
            .count()
            == 1
    })
    .await;
    let first = pods_of(&pods, "web").await[0]
        .metadata
        .name
        .clone()
        .unwrap();

    pods.delete(&first, &DeleteParams::default()).await.unwrap();
    eventually("terminating, unready, replaced", || async {
        let all = pods_of(&pods, "web").await;
        let old = all
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(first.as_str()));
        let replacement = all
            .iter()
            .any(|p| p.metadata.name.as_deref() != Some(first.as_str()) && ready(p));
        old.is_some_and(|p| p.metadata.deletion_timestamp.is_some() && !ready(p)) && replacement
    })
    .await;
    assert_eq!(
        pods.get(&first)
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(30)
    );
    assert!(
        cluster
            .endpoints("default", "web")
            .iter()
            .all(|e| e.pod != first),
        "terminating pods leave the endpoints"
    );

    pods.delete(
        &first,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(code(pods.get(&first).await), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_process_exits_turns_unready_and_restarts() {
    let script = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/exit":
            os._exit(3)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;
    let cluster = TestCluster::builder()
        .sim_settings(SimSettings {
            crash_restart_interval: Duration::from_millis(300),
            ..Default::default()
        })
        .start()
        .await
        .unwrap();
    cluster.set_pod_runner(sluice_e2e::ProcessRunner::new("python3", ["-c", script]));
    let rs_api: Api<ReplicaSet> = Api::namespaced(cluster.client(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let services: Api<Service> = Api::namespaced(cluster.client(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})).unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    rs_api
        .create(&PostParams::default(), &replicaset("web", 1, json!({})))
        .await
        .unwrap();
    eventually("ready pod with a process", || async {
        cluster
            .endpoints("default", "web")
            .iter()
            .any(|e| e.ready && e.process_port.is_some())
    })
    .await;
    let port = cluster.endpoints("default", "web")[0].process_port.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(b"GET /exit HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
    }
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |c| c[0].restart_count)
    };
    eventually("restarted after the crash and ready again", || async {
        let all = pods_of(&pods, "web").await;
        all.len() == 1 && restarts(&all[0]) >= 1 && ready(&all[0])
    })
    .await;
    // The restarted process serves again.
    let new_port = cluster.endpoints("default", "web")[0].process_port.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", new_port))
        .await
        .unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.ends_with("ok"), "{response}");
}
