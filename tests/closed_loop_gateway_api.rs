//! Gateway API traffic through the closed loop: a real nginx follows the HTTPRoutes (weighted
//! backends per rule, header matches, request mirrors), its Gateway API metrics go to a real
//! Prometheus, and Rollouts routed through HTTPRoute weights are promoted or aborted on what
//! that Prometheus measures (`gateway-api-success-rate`).
//!
//! 1. nginx on its own follows an HTTPRoute: exact weights, a header rule, a 50% mirror, 500s
//!    for a backendRef to a missing Service.
//! 2. A good version through 20/50/100 (Sluice's `gatewayAPI` field): promoted, the measured
//!    share within 3 points of each weight, no failed request, the route back to 100/0.
//! 3. A bad version (30% errors, Argo's `argoproj-labs/gatewayAPI` plugin shape): aborted,
//!    the route back to 100% stable, every later request served by the stable version.
//! 4. `setHeaderRoute` and `setMirrorRoute`: header traffic all on the canary while the rest
//!    stays stable; then users see stable only while the canary gets the mirrored half; the
//!    managed rules gone after promotion.
//! 5. GitOps: the HTTPRoute re-applied from Git every 200 ms during a rollout (the managed
//!    fields ignored, as docs/gitops.md configures Argo CD) changes nothing traffic sees.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use serde_json::json;
use sluice::demo::stack::{LocalStack, Timeline, rollout_yaml};
use sluice_e2e::TestCluster;
use sluice_e2e::dataplane::DataPlane;
use sluice_e2e::demo_app::{AppRunner, ERROR_RATIO};
use sluice_e2e::loadgen::{get, split_of};
use sluice_test_support::closed_loop::*;

fn deployment(name: &str, version: &str) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "track": name}},
            "template": {"metadata": {"labels": {"app": "web", "track": name}},
                "spec": {"containers": [{"name": "app", "image": format!("web:{version}")}]}}}})
}

fn service(name: &str, track: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": "web", "track": track}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

fn http_route(rules: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gateway"}], "hostnames": ["web.example"], "rules": rules}})
}

/// Status and version of `n` sequential requests.
async fn answers(
    addr: SocketAddr,
    host: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(addr, host, headers).await);
    }
    out
}

fn count_version(a: &[(u16, String)], version: &str) -> usize {
    a.iter().filter(|(s, v)| *s == 200 && v == version).count()
}

/// The value of the one series of `metric` whose labels contain every `labels` pair (0 if none).
fn series(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn until(dp: &DataPlane, what: &str, check: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        dp.wait_synced(Duration::from_secs(5)).await;
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; nginx config:\n{}\nlast error: {:?}",
            dp.config(),
            dp.last_error()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_follows_httproute_weights_header_matches_and_mirrors() {
    let cluster = TestCluster::builder()
        .pod_ready_delay(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    cluster.install_istio_crds().unwrap();
    cluster.set_pod_runner(AppRunner);
    for obj in [
        deployment("stable", "v1"),
        deployment("canary", "v2"),
        service("web-stable", "stable"),
        service("web-canary", "canary"),
        http_route(json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                          "headers": [{"name": "X-Canary", "value": "yes"}]}],
             "backendRefs": [{"name": "web-canary", "port": 80}]},
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 80},
                             {"name": "web-canary", "port": 80, "weight": 20}]}
        ])),
    ] {
        cluster.apply_object(obj).unwrap();
    }
    let dp = DataPlane::start(cluster.client()).await.expect("nginx");
    let gw = dp.gateway_addr();
    until(&dp, "all four pods behind the HTTPRoute", async || {
        ["web-stable", "web-canary"].iter().all(|s| {
            cluster
                .endpoints("default", s)
                .iter()
                .filter(|e| e.ready && e.process_port.is_some())
                .count()
                == 2
        }) && count_version(
            &answers(gw, "web.example", &[("X-Canary", "yes")], 4).await,
            "v2",
        ) == 4
    })
    .await;

    // Weights 80/20: exactly one request in five to the canary (smooth weighted round robin).
    let split = answers(gw, "web.example", &[], 200).await;
    assert_eq!(count_version(&split, "v1"), 160, "{split:?}");
    assert_eq!(count_version(&split, "v2"), 40, "{split:?}");
    // The header rule sends everything to the canary; a Host no route names gets 404.
    let header = answers(gw, "web.example", &[("X-Canary", "yes")], 20).await;
    assert_eq!(count_version(&header, "v2"), 20);
    assert_eq!(get(gw, "other.example", &[]).await.0, 404);

    // New weights, and a mirror of 50% of the main rule's requests to the canary.
    let reloads = dp.reloads();
    cluster
        .apply_object(http_route(json!([
            {"matches": [{"headers": [{"name": "X-Canary", "value": "yes"}]}],
             "backendRefs": [{"name": "web-canary", "port": 80}]},
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 100},
                             {"name": "web-canary", "port": 80, "weight": 0}],
             "filters": [{"type": "RequestMirror", "requestMirror": {
                 "backendRef": {"name": "web-canary", "port": 80}, "percent": 50}}]}
        ])))
        .unwrap();
    until(&dp, "reloaded with the mirror", async || {
        dp.reloads() > reloads && dp.config().contains("mirror /_sl_mirror_")
    })
    .await;
    let before = dp.metrics_text();
    let mirrored = answers(gw, "web.example", &[], 100).await;
    assert_eq!(
        count_version(&mirrored, "v1"),
        100,
        "users see stable only: {mirrored:?}"
    );
    // The canary got exactly half of them as mirrored copies, counted on its backend.
    let canary = [
        ("route_name", "web"),
        ("route_rule", "1"),
        ("backend_name", "web-canary"),
    ];
    let stable = [
        ("route_name", "web"),
        ("route_rule", "1"),
        ("backend_name", "web-stable"),
    ];
    let metric = "gateway_api_http_requests_total";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = dp.metrics_text();
        let got = (
            series(&text, metric, &stable) - series(&before, metric, &stable),
            series(&text, metric, &canary) - series(&before, metric, &canary),
        );
        if got == (100.0, 50.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stable and mirrored requests counted {got:?}, expected (100, 50):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = dp.metrics_text();
    assert!(
        text.contains("gateway_api_http_requests_total{backend_name=\"web-canary\",backend_namespace=\"default\",response_code=\"200\",route_kind=\"HTTPRoute\",route_name=\"web\",route_namespace=\"default\",route_rule=\"0\"}"),
        "the header rule's requests: {text}"
    );

    // A backendRef to a Service that does not exist keeps its share, answered with 500.
    let reloads = dp.reloads();
    cluster
        .apply_object(http_route(json!([
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 3},
                             {"name": "web-gone", "port": 80, "weight": 1}]}
        ])))
        .unwrap();
    until(&dp, "reloaded with the missing backend", async || {
        dp.reloads() > reloads && !dp.config().contains("mirror /_sl_mirror_")
    })
    .await;
    let broken = answers(gw, "web.example", &[], 40).await;
    assert_eq!(count_version(&broken, "v1"), 30, "{broken:?}");
    assert_eq!(
        broken.iter().filter(|(s, _)| *s == 500).count(),
        10,
        "{broken:?}"
    );
}

fn routes(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ));
    Api::namespaced_with(client, NS, &ar)
}

/// (stable, canary) weights of the rule `main` of the HTTPRoute `web`.
async fn route_weights(stack: &LocalStack) -> (u64, u64) {
    let route = routes(stack.client())
        .get("web")
        .await
        .expect("HTTPRoute web");
    let v = serde_json::to_value(route).unwrap();
    let rule = v["spec"]["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "main"))
        .cloned()
        .unwrap_or_else(|| panic!("no rule main: {v}"));
    let weight = |name: &str| {
        rule["backendRefs"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == name))
            .and_then(|b| b["weight"].as_u64())
            .unwrap_or_else(|| panic!("no weight for {name}: {rule}"))
    };
    (weight("web-stable"), weight("web-canary"))
}

/// Rule names of the HTTPRoute `web`.
async fn rule_names(stack: &LocalStack) -> Vec<String> {
    let route = routes(stack.client())
        .get("web")
        .await
        .expect("HTTPRoute web");
    let v = serde_json::to_value(route).unwrap();
    v["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The failed requests of `samples`, with when they were sent relative to `begin` and what the
/// Rollout was doing then.
fn failures(
    samples: &[sluice_e2e::loadgen::Sample],
    begin: Instant,
    timeline: &Timeline,
) -> Vec<String> {
    let states = timeline.states();
    samples
        .iter()
        .filter(|s| s.failed())
        .map(|s| {
            let state = states.iter().rev().find(|o| o.at <= s.sent);
            format!(
                "{:.2}s status {} version {:?} (rollout step {:?} weight {:?} {:?})",
                s.sent.duration_since(begin).as_secs_f64(),
                s.status,
                s.version,
                state.and_then(|o| o.step),
                state.map(|o| o.weight),
                state.map(|o| o.phase.clone()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_version_is_promoted_through_httproute_weights() {
    let steps = format!(
        "      - setWeight: 20\n{}      - setWeight: 50\n{}      - setWeight: 100\n",
        gateway_analysis(2),
        gateway_analysis(2)
    );
    let canary = gateway_canary(GATEWAY_API, &steps);
    let stack = gateway_stack_with_stable(&canary).await;
    assert_eq!(route_weights(&stack).await, (100, 0));
    let load = stack.gateway_load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;
    let begin = Instant::now();
    let timeline = Timeline::start(stack.client(), NS, "web");
    let v1 = stable_hash(&stack).await;

    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[], &canary))
        .await
        .expect("rollout v2");
    stack
        .wait_rollout(NS, "web", Duration::from_secs(120), |r| {
            phase_is("Healthy")(r)
                && r.status.as_ref().is_some_and(|s| {
                    s.stable_rs.is_some() && s.stable_rs != v1 && s.stable_rs == s.current_pod_hash
                })
        })
        .await
        .expect("v2 promoted");
    assert_shares(&load, &timeline, &[20, 50], 50, false);
    wait_all_served_by(&load, "v2").await;
    assert_eq!(
        route_weights(&stack).await,
        (100, 0),
        "after promotion the route sends everything to the stable Service (now v2)"
    );
    let all = load.between(begin, Instant::now());
    assert!(
        all.iter().all(|s| !s.failed()),
        "a good rollout fails no request: {:?}\nnginx errors:\n{}",
        failures(&all, begin, &timeline),
        stack.dataplane.error_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_version_is_aborted_and_the_httproute_returns_to_stable() {
    // The pause holds 20% for at least 5 s plus the analysis' initial delay, whatever the
    // analysis measures: the share served at 20% is checked below on enough requests even when
    // the machine is busy and the abort comes at the first measurement.
    let steps = format!(
        "      - setWeight: 20\n      - pause: {{duration: 5s}}\n{}      - setWeight: 50\n      - pause: {{duration: 5s}}\n      - setWeight: 100\n",
        gateway_analysis(3)
    );
    // Argo Rollouts' plugin configuration, unchanged.
    let canary = gateway_canary(GATEWAY_API_PLUGIN, &steps);
    let stack = gateway_stack_with_stable(&canary).await;
    let load = stack.gateway_load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;
    let timeline = Timeline::start(stack.client(), NS, "web");
    let v1 = stable_hash(&stack).await;

    let started = Instant::now();
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[(ERROR_RATIO, "0.3")], &canary))
        .await
        .expect("rollout v2");
    let r = stack
        .wait_rollout(NS, "web", Duration::from_secs(90), |r| {
            phase_is("Degraded")(r)
                && r.status
                    .as_ref()
                    .and_then(|s| s.canary.weights.as_ref())
                    .is_none_or(|w| w.canary.weight == 0)
        })
        .await
        .expect("v2 aborted");
    let st = r.status.unwrap();
    assert!(st.abort, "aborted: {st:?}");
    assert_eq!(st.stable_rs, v1, "v1 stays stable");
    let msg = st.message.clone().unwrap_or_default();
    assert!(
        msg.contains("success-rate"),
        "the reason names the metric: {msg}"
    );
    assert!(
        timeline.states().iter().all(|s| s.weight <= 20),
        "never past the first step: {:?}",
        timeline.states()
    );
    assert_eq!(route_weights(&stack).await, (100, 0));
    // The canary got its 20% while it was measured.
    assert_shares(&load, &timeline, &[20], 100, true);

    wait_all_served_by(&load, "v1").await;
    let settled = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = load.between(settled, Instant::now() - Duration::from_millis(500));
    assert!(
        after.len() >= 60,
        "requests after the abort: {}",
        after.len()
    );
    assert!(
        after.iter().all(|s| s.version == "v1" && !s.failed()),
        "after the abort: {:?}",
        after
            .iter()
            .filter(|s| s.version != "v1" || s.failed())
            .map(|s| (&s.version, s.status))
            .collect::<Vec<_>>()
    );
    let blast = split_of(&load.between(started, settled), "v2");
    assert!(
        blast.version > 0 && blast.version_failed > 0,
        "the canary was tried and its errors measured: {blast:?}"
    );
    assert!(
        blast.version * 100 <= blast.total * 23,
        "the bad version got about its 20% share, no more: {blast:?}"
    );
}

/// `[from, to)` of the first time the Rollout was at step `step`.
fn step_interval(timeline: &Timeline, step: i32) -> (Instant, Instant) {
    let states = timeline.states();
    let i = states
        .iter()
        .position(|s| s.step == Some(step))
        .unwrap_or_else(|| panic!("step {step} never seen: {states:?}"));
    let end = states[i + 1..]
        .iter()
        .find(|s| s.step != Some(step))
        .map_or_else(Instant::now, |s| s.at);
    (states[i].at, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_route_and_mirror_route_reach_the_canary_and_go_away_at_promotion() {
    let steps = "      - setCanaryScale: {replicas: 2}
      - setHeaderRoute:
          name: canary-header
          match: [{headerName: X-Canary, headerValue: {exact: \"yes\"}}]
      - pause: {duration: 8s}
      - setMirrorRoute:
          name: mirror-all
          percentage: 50
          match: [{path: {prefix: /}}]
      - pause: {duration: 8s}
      - setWeight: 100
";
    let routing = "        managedRoutes: [{name: canary-header}, {name: mirror-all}]\n        gatewayAPI: {httpRoute: web}\n";
    let canary = gateway_canary(routing, steps);
    let stack = gateway_stack_with_stable(&canary).await;
    let load = stack.gateway_load("web.example", RATE);
    let header_load = sluice_e2e::loadgen::LoadGenerator::with_headers(
        stack.dataplane.gateway_addr(),
        "web.example",
        10,
        vec![("X-Canary".into(), "yes".into())],
    );
    wait_all_served_by(&load, "v1").await;
    let timeline = Timeline::start(stack.client(), NS, "web");
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[], &canary))
        .await
        .expect("rollout v2");

    // The mirror step: measured through Prometheus while it lasts.
    stack
        .wait_rollout(NS, "web", Duration::from_secs(90), |r| {
            sluice_test_support::rollout::step(r) == Some(4)
        })
        .await
        .expect("at the mirror step");
    assert_eq!(
        rule_names(&stack).await,
        ["canary-header", "mirror-all", "main"],
        "Sluice's rules first, in managedRoutes order"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rate = |backend: &str| {
        format!(
            "sum(rate(gateway_api_http_requests_total{{route_namespace=\"{NS}\",route_name=\"web\",route_rule=\"mirror-all\",backend_name=\"{backend}\"}}[4s]))"
        )
    };
    let ratio = stack
        .prometheus
        .query(&format!("{} / {}", rate("web-canary"), rate("web-stable")))
        .await
        .expect("query");
    assert!(
        ratio.first().is_some_and(|r| (r - 0.5).abs() <= 0.1),
        "the canary gets a copy of half the requests: {ratio:?}\n{}",
        stack.dataplane.metrics_text()
    );

    stack
        .wait_rollout(NS, "web", Duration::from_secs(60), |r| {
            phase_is("Healthy")(r) && sluice_test_support::rollout::step(r) == Some(6)
        })
        .await
        .expect("v2 promoted");

    // While the header route was the only change: header requests all on v2, others all on v1.
    let (from, to) = step_interval(&timeline, 2);
    let (from, to) = (
        from + Duration::from_secs(1),
        to - Duration::from_millis(700),
    );
    let plain = load.split("v2", from, to);
    assert!(plain.total >= 100 && plain.version == 0, "{plain:?}");
    let header = header_load.split("v2", from, to);
    assert!(
        header.total >= 30 && header.version == header.total && header.version_failed == 0,
        "{header:?}"
    );
    // With the mirror: users still see v1 only (the mirror's answers are discarded).
    let (from, to) = step_interval(&timeline, 4);
    let mirrored = load.split(
        "v2",
        from + Duration::from_secs(1),
        to - Duration::from_millis(700),
    );
    assert!(
        mirrored.total >= 100 && mirrored.version == 0,
        "{mirrored:?}"
    );

    // Promotion removed Sluice's rules and left the route at 100% stable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rule_names(&stack).await != ["main"] {
        assert!(
            Instant::now() < deadline,
            "managed rules still there 10s after promotion: {:?}",
            rule_names(&stack).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(route_weights(&stack).await, (100, 0));
    wait_all_served_by(&load, "v2").await;
}

/// The Git manifest of the route, with the weights of the backendRefs the live route has taken
/// from it: what Argo CD applies with `ignoreDifferences` on the weights and
/// `RespectIgnoreDifferences=true`.
fn respecting_live_weights(git: &serde_json::Value, live: &serde_json::Value) -> serde_json::Value {
    let mut out = git.clone();
    for rule in out["spec"]["rules"].as_array_mut().into_iter().flatten() {
        let name = rule["name"].clone();
        let Some(live_rule) = live["spec"]["rules"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
        else {
            continue;
        };
        for b in rule["backendRefs"].as_array_mut().into_iter().flatten() {
            if let Some(w) = live_rule["backendRefs"]
                .as_array()
                .and_then(|l| l.iter().find(|l| l["name"] == b["name"]))
                .map(|l| l["weight"].clone())
            {
                b["weight"] = w;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_reapplying_the_httproute_every_200ms_changes_nothing_traffic_sees() {
    let steps = "      - setWeight: 20\n      - pause: {duration: 6s}\n      - setWeight: 50\n      - pause: {duration: 6s}\n      - setWeight: 100\n";
    let canary = gateway_canary(GATEWAY_API, steps);
    let stack = gateway_stack_with_stable(&canary).await;
    let load = stack.gateway_load("web.example", RATE);
    wait_all_served_by(&load, "v1").await;

    let git: serde_json::Value =
        serde_yaml::from_str(&sluice::demo::stack::gateway_route(NS)).unwrap();
    let applies = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sync = {
        let client = stack.client();
        let applies = applies.clone();
        tokio::spawn(async move {
            let api = routes(client.clone());
            loop {
                if let Ok(live) = api.get("web").await {
                    let live = serde_json::to_value(live).unwrap();
                    let desired = respecting_live_weights(&git, &live);
                    match sluice::demo::stack::apply(&client, desired).await {
                        Ok(()) => {
                            applies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => eprintln!("sync of the HTTPRoute failed: {e:#}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let begin = Instant::now();
    let reloads = stack.dataplane.reloads();
    stack.cluster.clear_writes();
    let timeline = Timeline::start(stack.client(), NS, "web");
    let v1 = stable_hash(&stack).await;
    stack
        .apply_yaml(&rollout_yaml(NS, 4, "v2", &[], &canary))
        .await
        .expect("rollout v2");
    stack
        .wait_rollout(NS, "web", Duration::from_secs(90), |r| {
            phase_is("Healthy")(r)
                && r.status.as_ref().is_some_and(|s| {
                    s.stable_rs.is_some() && s.stable_rs != v1 && s.stable_rs == s.current_pod_hash
                })
        })
        .await
        .expect("v2 promoted under the sync loop");
    wait_all_served_by(&load, "v2").await;
    sync.abort();

    let applied = applies.load(std::sync::atomic::Ordering::Relaxed);
    assert!(applied >= 50, "the route was re-applied {applied} times");
    assert_shares(&load, &timeline, &[20, 50], 50, false);
    let all = load.between(begin, Instant::now());
    assert!(
        all.iter().all(|s| !s.failed()),
        "failed requests: {:?}",
        failures(&all, begin, &timeline)
    );
    // Sluice saw no drift to correct: its writes to the route are the steps' (20, 50, back to
    // 100% stable at promotion, each possibly retried once on a concurrent re-apply), not one per
    // re-apply.
    let sluice_writes: Vec<_> = stack
        .cluster
        .writes()
        .into_iter()
        .filter(|w| w.resource == "httproutes" && w.field_manager.as_deref() != Some("sluice-demo"))
        .collect();
    assert!(
        sluice_writes.len() <= 8,
        "{} writes by the controller: {:?}",
        sluice_writes.len(),
        sluice_writes
            .iter()
            .map(|w| (&w.verb, &w.uri))
            .collect::<Vec<_>>()
    );
    // And nginx reloaded for the weight changes only, not for the re-applies.
    let reloaded = stack.dataplane.reloads() - reloads;
    assert!(
        reloaded <= 8,
        "nginx reloaded {reloaded} times for {applied} re-applies"
    );
    assert_eq!(route_weights(&stack).await, (100, 0));
}
