//! Controller figures: API writes per completed canary step, writes per settled Rollout per hour,
//! controller memory with many settled Rollouts, and reconcile latency.
//!
//! The test cluster runs in this process; the controller runs as the real `sluice controller`
//! binary in a child process, so its resident memory is measured alone.
//!
//! ```sh
//! cargo build --release --bin sluice
//! cargo run --release --example controller_bench -- 1000 10000
//! cargo run --release --example controller_bench -- --mass 1000 [--replicas 1] [--qps 100 --burst 200]
//! ```
//!
//! A heap profile of the controller: `SLUICE_BENCH_WRAP="heaptrack -o /tmp/sluice"` before the
//! command, then `heaptrack_print /tmp/sluice.zst`.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams, PostParams};
use sluice::api::rollout::Rollout;
use sluice_e2e::TestCluster;

fn rollout(name: &str, replicas: i32, steps: &str, routed: bool) -> Rollout {
    let mut canary: serde_json::Value = serde_yaml::from_str(steps).unwrap();
    if routed {
        canary["canaryService"] = "web-canary".into();
        canary["stableService"] = "web-stable".into();
        canary["scaleDownDelaySeconds"] = 1.into();
        canary["trafficRouting"] = serde_json::json!({"nginx": {"stableIngress": "web"}});
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            "strategy": {"canary": canary}
        }
    }))
    .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Controller {
    child: Child,
    admin: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_controller(kubeconfig: &Path) -> Controller {
    start_controller_with(kubeconfig, 5000, 10000)
}

fn start_controller_with(kubeconfig: &Path, qps: u32, burst: u32) -> Controller {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/sluice");
    // `SLUICE_BENCH_WRAP="heaptrack -o /tmp/sluice"` runs the controller under a profiler.
    let wrap: Vec<String> = std::env::var("SLUICE_BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let child = command
        .args([
            "controller",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--leader-elect=false",
            "--qps",
            &qps.to_string(),
            "--burst",
            &burst.to_string(),
            "--rollout-workers",
            "32",
            "--admin-address",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run `cargo build --release --bin sluice` first)",
                bin.display()
            )
        });
    Controller {
        child,
        admin: format!("http://127.0.0.1:{port}"),
    }
}

/// User plus system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces) start after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Requests counted since `before` whose key `keep` selects, for the keys that grew.
fn grown(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    keep: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| keep(k))
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

async fn metrics(c: &Controller) -> String {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("{}/metrics", c.admin)).await
            && let Ok(t) = r.text().await
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    String::new()
}

/// The rollout reconcile's latency histogram (waits on the API server included).
const LATENCY: &str = "sluice_reconcile_duration_seconds";
/// The rollout reconcile's compute histogram (time inside its own polls).
const BUSY: &str = "sluice_reconcile_busy_seconds";

/// p50/p99 of a rollout reconcile histogram, from its cumulative buckets (upper bounds).
fn quantiles(text: &str, histogram: &str) -> (f64, f64) {
    (
        quantile_between(histogram, "", text, 0.5),
        quantile_between(histogram, "", text, 0.99),
    )
}

/// Waits until `n` Rollouts are Healthy, following a watch (one list, then events: polling a
/// list of 10,000 Rollouts would load the test cluster more than the controller does).
async fn wait_settled(api: &Api<Rollout>, n: usize) -> Duration {
    let start = Instant::now();
    healthy_times(api, n, |_, _| true).await;
    start.elapsed()
}

/// Follows the Rollouts until `n` of them are Healthy with a pod hash `current(name, hash)`
/// accepts, and returns when each became so (by name), from when this was called.
async fn healthy_times(
    api: &Api<Rollout>,
    n: usize,
    current: impl Fn(&str, &str) -> bool,
) -> std::collections::BTreeMap<String, Duration> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let start = Instant::now();
    let mut done = std::collections::BTreeMap::new();
    let mut events = std::pin::pin!(
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while done.len() < n {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(60), events.next()).await else {
            eprintln!(
                "  (still waiting: {} of {n} Healthy after {:.0}s)",
                done.len(),
                start.elapsed().as_secs_f64()
            );
            continue;
        };
        let r = match next {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                eprintln!("  (watch of Rollouts: {e})");
                continue;
            }
            None => panic!("the watch of Rollouts ended"),
        };
        let st = r.status.clone().unwrap_or_default();
        let healthy = st.phase.map(|p| p.as_str()) == Some("Healthy")
            && st.stable_rs == st.current_pod_hash
            && st
                .current_pod_hash
                .as_deref()
                .is_some_and(|h| current(r.metadata.name.as_deref().unwrap_or_default(), h));
        if healthy {
            done.entry(r.metadata.name.clone().unwrap_or_default())
                .or_insert_with(|| start.elapsed());
        }
    }
    done
}

/// A rollout reconcile histogram's cumulative buckets (upper bound, count).
fn buckets(histogram: &str, text: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{histogram}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("controller=\"rollout\""))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The bucket bound at or under which a fraction `p` of the reconciles between two scrapes fell.
fn quantile_between(histogram: &str, before: &str, after: &str, p: f64) -> f64 {
    let (b, a) = (buckets(histogram, before), buckets(histogram, after));
    let diff: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, v)| {
            let was = b.iter().find(|(l, _)| l == le).map_or(0.0, |x| x.1);
            (*le, v - was)
        })
        .collect();
    let total = diff.last().map_or(0.0, |x| x.1);
    diff.iter()
        .find(|(_, c)| *c >= p * total)
        .map_or(f64::NAN, |(le, _)| *le)
}

/// Mass update: `n` routed Rollouts (each with its stable and canary Services and its Ingress,
/// `replicas` pods, `setWeight: 50` then full promotion), settled, then all given a new image at once
/// as one GitOps sync of a shared base image would. Prints the time until all are Healthy on
/// the new version, the slowest and the 99th percentile Rollout (no Rollout starved), the
/// controller's API requests per second (the busiest second against `--qps`/`--burst`), and the
/// reconcile latency during the update.
async fn mass_update(kubeconfig: &Path, n: usize, replicas: i32, qps: u32, burst: u32) {
    use futures::StreamExt;
    let cluster = std::sync::Arc::new(
        TestCluster::builder()
            .pod_ready_delay(Duration::from_millis(100))
            .start()
            .await
            .unwrap(),
    );
    cluster
        .load_crds_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .unwrap();
    cluster.write_kubeconfig(kubeconfig).unwrap();
    let client = cluster.client();
    let api: Api<Rollout> = Api::namespaced(client.clone(), "default");
    let svc: Api<Service> = Api::namespaced(client.clone(), "default");
    let ing: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let controller = start_controller_with(kubeconfig, qps, burst);
    let created = Instant::now();
    let steps = "steps:\n- setWeight: 50\n";
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let (api, svc, ing) = (api.clone(), svc.clone(), ing.clone());
            async move {
                let app = format!("app-{i}");
                for role in ["stable", "canary"] {
                    let s: Service = serde_json::from_value(serde_json::json!({
                        "metadata": {"name": format!("{app}-{role}")},
                        "spec": {"selector": {"app": app}, "ports": [{"port": 80}]}}))
                    .unwrap();
                    svc.create(&PostParams::default(), &s).await.unwrap();
                }
                let i: Ingress = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": app},
                    "spec": {"rules": [{"host": app, "http": {"paths": [{"path": "/",
                        "pathType": "Prefix", "backend": {"service": {
                            "name": format!("{app}-stable"), "port": {"number": 80}}}}]}}]}}))
                .unwrap();
                ing.create(&PostParams::default(), &i).await.unwrap();
                let mut ro = rollout(&app, replicas, steps, true);
                let canary = ro.spec.strategy.canary.as_mut().unwrap();
                canary.stable_service = Some(format!("{app}-stable"));
                canary.canary_service = Some(format!("{app}-canary"));
                let mut routing = canary.traffic_routing.clone().unwrap();
                routing.nginx.as_mut().unwrap().stable_ingress = Some(app.clone());
                canary.traffic_routing = Some(routing);
                api.create(&PostParams::default(), &ro).await.unwrap();
            }
        })
        .await;
    let settle = wait_settled(&api, n).await;
    println!(
        "mass update, {n} routed Rollouts of {replicas} replicas (controller --qps {qps} --burst {burst}): created and settled in {:.1}s ({:.1}s after the last create)",
        created.elapsed().as_secs_f64(),
        settle.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    let metrics_before = metrics(&controller).await;
    let cpu_before = cpu_seconds(controller.child.id());
    let requests_before = cluster.request_counts();
    // The controller's requests, sampled every second while the update runs.
    let sampler = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut last = cluster.request_counts();
            let mut busiest = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = cluster.request_counts();
                let d: u64 = grown(&last, &now, controller_request).values().sum();
                busiest = busiest.max(d);
                last = now;
                if d == 0 && busiest > 0 {
                    return busiest;
                }
            }
        })
    };
    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
    // Each Rollout's version before the sync (their templates differ by their `app` label).
    let old: std::collections::BTreeMap<String, String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| {
            let hash = r
                .status
                .unwrap_or_default()
                .current_pod_hash
                .unwrap_or_default();
            (r.metadata.name.unwrap_or_default(), hash)
        })
        .collect();
    let finished = tokio::spawn({
        let api = api.clone();
        async move {
            healthy_times(&api, n, move |name, h| {
                old.get(name).is_some_and(|was| was.as_str() != h)
            })
            .await
        }
    });
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let api = api.clone();
            let patch = patch.clone();
            async move {
                api.patch(
                    &format!("app-{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .unwrap();
            }
        })
        .await;
    let synced = started.elapsed();
    let times = finished.await.unwrap();
    let all = started.elapsed();
    let requests = grown(
        &requests_before,
        &cluster.request_counts(),
        controller_request,
    );
    let total: u64 = requests.values().sum();
    let busiest = sampler.await.unwrap_or(0);
    let mut sorted: Vec<Duration> = times.values().copied().collect();
    sorted.sort();
    let at =
        |p: f64| sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1];
    let metrics_after = metrics(&controller).await;
    println!(
        "  all {n} Healthy on the new version {:.1}s after the sync began (the sync's patches took {:.1}s); per Rollout: p50 {:.1}s, p99 {:.1}s, slowest {:.1}s",
        all.as_secs_f64(),
        synced.as_secs_f64(),
        at(0.5).as_secs_f64(),
        at(0.99).as_secs_f64(),
        at(1.0).as_secs_f64(),
    );
    println!(
        "  controller API requests: {total} = {:.0}/s on average, {busiest} in the busiest second; CPU {:.1} s; rollout reconcile p50 <= {}s, p99 <= {}s; its compute p50 <= {}s, p99 <= {}s (histogram bucket bounds)",
        total as f64 / all.as_secs_f64(),
        cpu_seconds(controller.child.id()) - cpu_before,
        quantile_between(LATENCY, &metrics_before, &metrics_after, 0.5),
        quantile_between(LATENCY, &metrics_before, &metrics_after, 0.99),
        quantile_between(BUSY, &metrics_before, &metrics_after, 0.5),
        quantile_between(BUSY, &metrics_before, &metrics_after, 0.99),
    );
    println!("  by kind: {requests:?}");
    drop(controller);
}

/// Whether a request counted by the test cluster is the controller's: this program only lists,
/// watches, creates and patches Rollouts and creates Services and Ingresses.
fn controller_request(key: &str) -> bool {
    !matches!(
        key,
        "patch rollouts" | "list rollouts" | "watch rollouts" | "create rollouts" | "get rollouts"
    ) && !key.starts_with("create services")
        && !key.starts_with("create ingresses")
}

#[tokio::main]
async fn main() {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let flag = |f: &str| std::env::args().any(|a| a == f);
    // `--canary-only`: the writes and reads of one canary update; `--scale-only`: the settled
    // Rollouts' figures.
    // `--mass N [--qps Q --burst B]`: only the mass update of N routed Rollouts.
    let value = |f: &str| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1)?.parse::<u32>().ok())
    };
    if let Some(n) = value("--mass") {
        let dir = tempfile::tempdir().unwrap();
        let qps = value("--qps").unwrap_or(5000);
        let burst = value("--burst").unwrap_or(2 * qps);
        let replicas = value("--replicas").unwrap_or(1) as i32;
        mass_update(
            &dir.path().join("kubeconfig"),
            n as usize,
            replicas,
            qps,
            burst,
        )
        .await;
        return;
    }
    let counts = if flag("--canary-only") {
        Vec::new()
    } else if counts.is_empty() {
        vec![1000]
    } else {
        counts
    };
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");

    // 1. Writes per completed canary step.
    if !flag("--scale-only") {
        let cluster = TestCluster::builder()
            .pod_ready_delay(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        cluster
            .load_crds_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
            .unwrap();
        cluster.write_kubeconfig(&kubeconfig).unwrap();
        let client = cluster.client();
        let svc: Api<Service> = Api::namespaced(client.clone(), "default");
        for name in ["web-stable", "web-canary"] {
            let s: Service = serde_json::from_value(serde_json::json!({"metadata": {"name": name},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
            .unwrap();
            svc.create(&PostParams::default(), &s).await.unwrap();
        }
        let ing: Api<Ingress> = Api::namespaced(client.clone(), "default");
        let i: Ingress = serde_json::from_value(serde_json::json!({"metadata": {"name": "web"},
            "spec": {"rules": [{"host": "web", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}}]}}]}})).unwrap();
        ing.create(&PostParams::default(), &i).await.unwrap();
        let controller = start_controller(&kubeconfig);
        let api: Api<Rollout> = Api::namespaced(client.clone(), "default");
        let steps = "steps:\n- setWeight: 20\n- setWeight: 40\n- setWeight: 60\n- setWeight: 80\n- setWeight: 100\n";
        api.create(&PostParams::default(), &rollout("web", 4, steps, true))
            .await
            .unwrap();
        wait_settled(&api, 1).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.clear_writes();
        let requests_before = cluster.request_counts();
        let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
        let before = api
            .get("web")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
            .current_pod_hash;
        api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let started = Instant::now();
        loop {
            let r = api.get("web").await.unwrap();
            let st = r.status.unwrap_or_default();
            if st.current_pod_hash != before
                && st.stable_rs == st.current_pod_hash
                && st.phase.map(|p| p.as_str()) == Some("Healthy")
                && st.canary.weights.as_ref().map(|w| w.canary.weight) == Some(0)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let update = started.elapsed();
        // Past the status write that replica counts wait for (10 s, `COUNTER_DELAY`): the
        // old ReplicaSet's scale-down moves only counters, written on their own after it.
        tokio::time::sleep(Duration::from_secs(13)).await;
        // Only the controller writes to this cluster now (the image patch above left out).
        let writes: Vec<_> = cluster
            .writes()
            .into_iter()
            .filter(|w| w.code < 300)
            .filter(|w| !(w.resource == "rollouts" && w.verb == "patch" && w.subresource.is_none()))
            .collect();
        // Reads by the controller: this program reads only Rollouts.
        let reads = grown(&requests_before, &cluster.request_counts(), |k| {
            (k.starts_with("get ") || k.starts_with("list ")) && k != "get rollouts"
        });
        println!("  controller reads during the update (get/list, Rollouts left out): {reads:?}");
        let events = writes.iter().filter(|w| w.resource == "events").count();
        let status = writes
            .iter()
            .filter(|w| w.subresource.as_deref() == Some("status"))
            .count();
        let total = writes.len() - events;
        println!(
            "canary update, 5 setWeight steps + promotion, 4 replicas: {:.1}s",
            update.as_secs_f64()
        );
        println!(
            "  API writes (excluding Events): {total} = {:.1} per step; status writes {status} = {:.1} per step; Events {events}",
            total as f64 / 5.0,
            status as f64 / 5.0
        );
        let mut by_kind = std::collections::BTreeMap::new();
        for w in &writes {
            *by_kind
                .entry(format!(
                    "{} {}{}",
                    w.verb,
                    w.resource,
                    w.subresource
                        .as_deref()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default()
                ))
                .or_insert(0) += 1;
        }
        println!("  by kind: {by_kind:?}");
        cluster.clear_writes();
        let idle_before = cluster.request_counts();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let settled = cluster
            .writes()
            .into_iter()
            .filter(|w| w.code < 300)
            .count();
        let idle_requests = grown(&idle_before, &cluster.request_counts(), |_| true);
        println!(
            "  settled Rollout: {settled} writes in 60 s of real time = {} per hour; requests meanwhile: {idle_requests:?}",
            settled * 60
        );
        drop(controller);
    }

    // 2. Memory and reconcile latency with many settled Rollouts.
    for n in counts {
        let cluster = TestCluster::builder().start().await.unwrap();
        cluster
            .load_crds_from_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
            .unwrap();
        cluster.write_kubeconfig(&kubeconfig).unwrap();
        let client = cluster.client();
        let api: Api<Rollout> = Api::namespaced(client.clone(), "default");
        let controller = start_controller(&kubeconfig);
        let base = {
            tokio::time::sleep(Duration::from_secs(2)).await;
            rss_kib(controller.child.id())
        };
        let counts_before = cluster.request_counts();
        let own_cpu_before = cpu_seconds(std::process::id());
        let created = Instant::now();
        // Zero replicas: settled Rollouts with their ReplicaSets (what the controller caches),
        // without pods (which it never watches).
        let steps = "steps:\n- setWeight: 50\n- pause: {}\n";
        let mut pending = futures::stream::FuturesUnordered::new();
        for i in 0..n {
            let api = api.clone();
            pending.push(async move {
                api.create(
                    &PostParams::default(),
                    &rollout(&format!("app-{i}"), 0, steps, false),
                )
                .await
                .unwrap();
            });
            if pending.len() >= 64 {
                use futures::StreamExt;
                pending.next().await;
            }
        }
        {
            use futures::StreamExt;
            while pending.next().await.is_some() {}
        }
        let settle = wait_settled(&api, n).await;
        let total = created.elapsed();
        let own_cpu = cpu_seconds(std::process::id()) - own_cpu_before;
        let settle_requests = grown(&counts_before, &cluster.request_counts(), |_| true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let rss = rss_kib(controller.child.id());
        let text = metrics(&controller).await;
        let (p50, p99) = quantiles(&text, LATENCY);
        let (busy50, busy99) = quantiles(&text, BUSY);
        let cpu_settled = cpu_seconds(controller.child.id());
        let idle_before = cluster.request_counts();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let idle_cpu = cpu_seconds(controller.child.id()) - cpu_settled;
        let idle_requests = grown(&idle_before, &cluster.request_counts(), |_| true);
        let lists: u64 = cluster
            .request_counts()
            .iter()
            .filter(|(k, _)| k.starts_with("list ") || k.starts_with("watch "))
            .filter(|(k, _)| !k.ends_with(" rollouts"))
            .map(|(_, v)| v)
            .sum();
        println!(
            "{n} settled Rollouts: created and settled in {:.1}s ({:.1}s after the last create); controller RSS {:.1} MiB (idle before: {:.1} MiB); rollout reconcile p50 <= {p50}s, p99 <= {p99}s; its compute p50 <= {busy50}s, p99 <= {busy99}s (histogram bucket bounds)",
            total.as_secs_f64(),
            settle.as_secs_f64(),
            rss as f64 / 1024.0,
            base as f64 / 1024.0
        );
        println!(
            "  controller CPU {cpu_settled:.1} s to settle; idle 30 s: {idle_cpu:.2} CPU s (= {:.0} CPU s per idle hour), requests {idle_requests:?}; LIST+WATCH requests of kinds other than Rollouts since start: {lists}",
            idle_cpu * 120.0
        );
        println!(
            "  until settled: this process (test cluster, creates, watch) {own_cpu:.1} CPU s; requests by kind (the creates of Rollouts and a list and watch of them are this benchmark's): {settle_requests:?}"
        );
        drop(controller);
    }
}
