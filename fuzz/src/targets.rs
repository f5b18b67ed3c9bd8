//! The fuzz targets' bodies: one function per parser of outside input, each taking arbitrary
//! bytes. A target must not panic, hang or allocate without bound on any input; where a parser has
//! a property that holds for every input (a hash that does not depend on spelling, a patch that
//! brings the live object to what was wanted, a Secret that never survives redaction) the target
//! asserts it, so a violation is a crash the fuzzer keeps.
//!
//! This file is compiled twice: by the `sluice-fuzz` crate (the libFuzzer binaries under
//! `fuzz_targets/`) and by the main crate's `tests/fuzz_seeds.rs`, which replays the seed corpora
//! through the same functions on every test run. It therefore uses only what both have:
//! `sluice`, `serde_json`, `serde_yaml` and `k8s_openapi`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::{Value, json};
use sluice::analysis::args::{ResolvedArgs, SecretValues};
use sluice::analysis::condition::{Conditions, evaluate_time};
use sluice::analysis::value::MetricValue;
use sluice::api::analysis::{Argument, Metric};
use sluice::api::duration::{DurationString, IntOrDuration, parse_go_or_seconds};
use sluice::api::rollout::Rollout;
use sluice::traffic::DesiredTraffic;

/// A target: arbitrary bytes in, a panic on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("condition", condition),
    ("duration", duration),
    ("quantity", quantity),
    ("prometheus_response", prometheus_response),
    ("lint", lint),
    ("ingress", ingress),
    ("virtual_service", virtual_service),
    ("pod_template_hash", pod_template_hash),
    ("args", args),
];

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The value a metric measured, read from the tail of a condition input: JSON `null`, a number,
/// a list of numbers or a string; anything else is taken as a string.
fn metric_value(text: &str) -> MetricValue {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Null) => MetricValue::Nil,
        Ok(Value::Number(n)) => MetricValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        Ok(Value::Array(items)) => MetricValue::Numbers(
            items
                .iter()
                .map(|v| match v {
                    Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                    Value::String(s) if s == "NaN" => f64::NAN,
                    Value::String(s) if s == "+Inf" => f64::INFINITY,
                    Value::String(s) if s == "-Inf" => f64::NEG_INFINITY,
                    _ => 0.0,
                })
                .collect(),
        ),
        _ => MetricValue::String(text.to_string()),
    }
}

/// `successCondition`, newline, `failureCondition`, newline, the measured value (see
/// [`metric_value`]). An empty line is an absent condition.
pub fn condition(data: &[u8]) {
    let input = text(data);
    let mut parts = input.splitn(3, '\n');
    let success = parts.next().filter(|s| !s.is_empty());
    let failure = parts.next().filter(|s| !s.is_empty());
    let value = metric_value(parts.next().unwrap_or(""));
    if let Ok(conditions) = Conditions::compile(success, failure) {
        let verdict = conditions.evaluate(&value);
        // Evaluation is a pure function of the expression and the value.
        assert_eq!(
            verdict,
            conditions.evaluate(&value),
            "verdict not deterministic"
        );
    }
    for source in [success, failure].into_iter().flatten() {
        let _ = evaluate_time(source, jiff::Timestamp::UNIX_EPOCH);
        let _ = evaluate_time(source, jiff::Timestamp::MAX);
    }
}

/// A Go duration or a number of seconds, as in `pause.duration`, `interval`, `initialDelay`.
pub fn duration(data: &[u8]) {
    let input = text(data);
    let parsed = parse_go_or_seconds(&input);
    if let Ok(secs) = input.trim().parse::<u64>() {
        assert_eq!(
            parsed.as_ref().ok().map(std::time::Duration::as_secs),
            i64::try_from(secs).ok().map(|_| secs),
            "whole seconds {input:?}"
        );
    }
    let _ = DurationString(input.clone()).parse();
    // The same text as the YAML/JSON of a `pause.duration` field.
    for v in [
        serde_yaml::from_str::<IntOrDuration>(&input).ok(),
        serde_json::from_str::<IntOrDuration>(&input).ok(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = v.to_std();
        let _ = v.to_string();
    }
}

/// A Kubernetes quantity (`resources.limits.cpu`).
pub fn quantity(data: &[u8]) {
    let input = text(data);
    if let Ok(negative) = sluice::api::quantity::parse(&input) {
        assert!(!input.is_empty() && input.is_ascii(), "accepted {input:?}");
        assert!(!negative || input.starts_with('-'), "negative {input:?}");
    }
}

/// The body of a Prometheus HTTP API response; the first byte picks the HTTP status.
pub fn prometheus_response(data: &[u8]) {
    let (status, body) = match data.split_first() {
        Some((b, rest)) => {
            let code = [200, 200, 200, 400, 422, 500, 503, 204][usize::from(*b) % 8];
            (code, rest)
        }
        None => (200, data),
    };
    let status = http_status(status);
    let mut metadata = BTreeMap::new();
    let result = sluice::metrics::prometheus::parse_api_response(
        status,
        body,
        "http://prometheus.test:9090",
        &mut metadata,
    );
    if let Err(message) = result {
        // Messages go into status and Events: a body must not be copied in whole.
        assert!(
            message.len() < 4096 + 256,
            "message of {} bytes for a body of {}",
            message.len(),
            body.len()
        );
    }
}

fn http_status(code: u16) -> http::StatusCode {
    http::StatusCode::from_u16(code).unwrap_or_default()
}

/// `sluice lint` on one file of arbitrary text.
pub fn lint(data: &[u8]) {
    let input = text(data);
    let report = sluice::cli::lint::lint_sources(&[("fuzz.yaml".to_string(), input)], &[]);
    for f in &report.findings {
        let _ = f.to_string();
    }
}

const NGINX_ROLLOUT: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop, uid: 5d3c1d52-0000-4000-8000-000000000001}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: "nginx:1.27"}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting:
        nginx:
          stableIngress: web
          additionalStableIngresses: [web-admin]
          additionalIngressAnnotations: {canary-by-header: X-Canary}
          canaryIngressAnnotations: {my-org/team: checkout}
      steps: [{setWeight: 10}, {pause: {}}]
"#;

const ISTIO_ROLLOUT: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: "nginx:1.27"}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting:
        managedRoutes: [{name: beta}, {name: mirror}]
        istio:
          virtualServices:
          - name: web-vs
            routes: [primary]
            tlsRoutes: [{port: 443, sniHosts: [web.test]}]
            tcpRoutes: [{port: 5432}]
          - name: web-vs-plain
          destinationRule:
            name: web-dr
            canarySubsetName: canary
            stableSubsetName: stable
      steps: [{setWeight: 10}, {pause: {}}]
"#;

fn rollout(cell: &'static OnceLock<Rollout>, yaml: &str) -> &'static Rollout {
    cell.get_or_init(|| match serde_yaml::from_str(yaml) {
        Ok(r) => r,
        Err(e) => panic!("the fuzz targets' own rollout does not parse: {e}"),
    })
}

fn nginx_rollout() -> &'static Rollout {
    static CELL: OnceLock<Rollout> = OnceLock::new();
    rollout(&CELL, NGINX_ROLLOUT)
}

fn istio_rollout() -> &'static Rollout {
    static CELL: OnceLock<Rollout> = OnceLock::new();
    rollout(&CELL, ISTIO_ROLLOUT)
}

fn set_name(obj: &mut Value, name: &str) {
    if let Some(map) = obj.as_object_mut() {
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(name);
        meta["namespace"] = json!("shop");
    }
}

/// Applies `patch` to `live`; `None` when a `test` operation fails (which is what a guarded patch
/// is for) or the patch does not apply.
fn patched(live: &Value, patch: &json_patch::Patch) -> Option<Value> {
    let mut out = live.clone();
    json_patch::patch(&mut out, patch).ok().map(|()| out)
}

/// A stable Ingress as the user wrote it (name forced to one the rollout references), read by
/// the NGINX router to build the canary Ingress; the same object as a live canary Ingress to be
/// patched towards it. The first byte is the canary weight.
pub fn ingress(data: &[u8]) {
    let Some((weight, rest)) = data.split_first() else {
        return;
    };
    let weight = i32::from(*weight) - 10;
    let Ok(mut obj) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let r = nginx_rollout();
    set_name(&mut obj, "web");
    let Ok(stable) = serde_json::from_value::<Ingress>(obj.clone()) else {
        return;
    };
    let Ok(desired) = sluice::traffic::nginx::canary_ingress_for(r, &stable, weight) else {
        return;
    };
    let canary_name = sluice::traffic::canary_ingress_name("web", "web");
    set_name(&mut obj, &canary_name);
    let Ok(live) = serde_json::from_value::<Ingress>(obj) else {
        return;
    };
    if let Some(patch) = sluice::traffic::nginx::canary_ingress_update(&live, &desired) {
        let Ok(live_json) = serde_json::to_value(&live) else {
            return;
        };
        // The patch brings the live object where it was meant to go: patching again is a no-op.
        if let Some(after) = patched(&live_json, &patch)
            && let Ok(after) = serde_json::from_value::<Ingress>(after)
        {
            let again = sluice::traffic::nginx::canary_ingress_update(&after, &desired);
            assert!(again.is_none(), "second patch {again:?} after {patch:?}");
        }
    }
}

/// A live VirtualService (first byte: weight; second: which of the rollout's VirtualServices it
/// is, or the DestinationRule) given to the Istio router's pure functions.
pub fn virtual_service(data: &[u8]) {
    let [weight, which, rest @ ..] = data else {
        return;
    };
    let Ok(mut live) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let r = istio_rollout();
    let desired = DesiredTraffic {
        weight: i32::from(*weight) % 110,
        max_weight: 100,
        canary_hash: Some("6d4f7c9b8".into()),
        stable_hash: Some("57b9c8d6f".into()),
        legacy_label_hashes: Vec::new(),
        managed_routes: Default::default(),
    };
    use sluice::traffic::istio::*;
    if which % 3 == 2 {
        set_name(&mut live, "web-dr");
        for p in [
            destination_rule_patch(r, &live, &desired),
            destination_rule_release_patch(r, &live),
        ]
        .into_iter()
        .flatten()
        .flatten()
        {
            let _ = patched(&live, &p);
        }
        return;
    }
    set_name(
        &mut live,
        if which % 3 == 0 {
            "web-vs"
        } else {
            "web-vs-plain"
        },
    );
    let _ = virtual_service_weight(r, &live);
    let _ = virtual_service_release_patch(r, &live);
    if let Ok(Some(patch)) = virtual_service_patch(r, &live, &desired)
        && let Some(after) = patched(&live, &patch)
    {
        // Once patched, the live object has the weight that was asked for and needs no more
        // patching.
        let again = virtual_service_patch(r, &after, &desired);
        assert!(
            matches!(again, Ok(None)),
            "second patch {again:?} after {patch:?}"
        );
        if let Ok(Some(w)) = virtual_service_weight(r, &after) {
            assert_eq!(w, desired.weight, "weight read back");
        }
    }
}

/// A pod template as JSON: canonicalised and hashed as the controller does to name ReplicaSets.
pub fn pod_template_hash(data: &[u8]) {
    let Ok(template) = serde_json::from_slice::<PodTemplateSpec>(data) else {
        return;
    };
    use sluice::plan::hash::*;
    let hash = pod_template_hash(&template, None);
    assert!(!hash.is_empty() && hash.len() <= 10, "hash {hash:?}");
    assert!(
        same_template(&template, &template),
        "not the same as itself"
    );
    // The hash is of the template, not of its spelling: a JSON round trip keeps it.
    if let Ok(json) = serde_json::to_value(&template)
        && let Ok(again) = serde_json::from_value::<PodTemplateSpec>(json)
    {
        assert_eq!(
            pod_template_hash(&again, None),
            hash,
            "round trip changed the hash"
        );
        assert!(same_template(&template, &again));
    }
    let canonical = canonical_template(&template);
    if let Ok(again) = serde_json::from_value::<PodTemplateSpec>(canonical.clone()) {
        assert_eq!(
            canonical_template(&again),
            canonical,
            "canonical form is not a fixed point"
        );
    }
    let _ = pod_template_hash(&template, Some(i32::MAX));
}

/// `{{args.NAME}}` substitution: the first line is the text, then `name=value` lines (a value
/// starting with `secret:` comes from a Secret); a final line starting with `{` is a metric.
pub fn args(data: &[u8]) {
    let input = text(data);
    let mut lines = input.lines();
    let template = lines.next().unwrap_or("");
    let mut args = Vec::new();
    let mut secrets = SecretValues::new();
    let mut metric = None;
    for line in lines {
        if line.starts_with('{') {
            metric = serde_json::from_str::<Metric>(line).ok();
            continue;
        }
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let arg = match value.strip_prefix("secret:") {
            Some(v) => {
                let reference: sluice::api::analysis::SecretKeyRef =
                    match serde_json::from_value(json!({"name": "s", "key": name})) {
                        Ok(r) => r,
                        Err(_) => continue,
                    };
                secrets.insert(reference.clone(), v.to_string());
                serde_json::from_value::<Argument>(json!({
                    "name": name,
                    "valueFrom": {"secretKeyRef": {"name": "s", "key": name}}
                }))
            }
            None => serde_json::from_value::<Argument>(json!({"name": name, "value": value})),
        };
        if let Ok(arg) = arg {
            args.push(arg);
        }
    }
    let Ok(resolved) = ResolvedArgs::resolve(&args, &secrets) else {
        return;
    };
    let out = resolved.substitute(template, "fuzz").unwrap_or_default();
    let redacted = resolved.redact(&out);
    for s in secrets.values() {
        // Redaction writes stars: a Secret made of stars can re-form from them.
        if !s.is_empty() && !s.contains('*') {
            assert!(
                !redacted.contains(s.as_str()),
                "secret {s:?} in {redacted:?}"
            );
        }
    }
    if let Some(m) = metric {
        let _ = resolved.resolve_metric(&m);
        let _ = sluice::analysis::args::substitute_declared(&m, &args);
    }
}

// --- Seed corpora -------------------------------------------------------------------------------

/// The YAML files the seeds are made from: test fixtures, the shipped analysis templates, the
/// examples and the Helm chart's values.
fn seed_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = ["tests/fixtures", "analysis-templates", "examples", "charts"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    // After a syntax error the document iterator repeats that error forever: stop at the first.
    serde_yaml::Deserializer::from_str(text)
        .map_while(|d| serde_yaml::Value::deserialize(d).ok())
        .filter_map(|v| serde_json::to_value(v).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// Every (key, value) pair in a document, depth first.
fn walk<'a>(v: &'a Value, out: &mut Vec<(&'a str, &'a Value)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                out.push((k.as_str(), x));
                walk(x, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
        _ => {}
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The seed corpus of every target, made from the repository's fixtures under `root` and a few
/// shapes that no fixture holds (Prometheus responses, metric values).
pub fn seeds(root: &Path) -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut out: BTreeMap<&'static str, Vec<Vec<u8>>> = BTreeMap::new();
    let mut add = |target: &'static str, bytes: Vec<u8>| {
        let list = out.entry(target).or_default();
        if !list.contains(&bytes) {
            list.push(bytes);
        }
    };
    let values = [
        "42",
        "0.95",
        "[0.5, 1, 2]",
        "[]",
        "null",
        "\"ok\"",
        "[\"NaN\"]",
    ];
    for path in seed_files(root) {
        let Ok(file) = std::fs::read_to_string(&path) else {
            continue;
        };
        add("lint", file.clone().into_bytes());
        for doc in documents(&file) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let mut pairs = Vec::new();
            walk(&doc, &mut pairs);
            for (key, v) in pairs {
                match key {
                    "successCondition" | "failureCondition" => {
                        if let Some(c) = v.as_str() {
                            for value in values {
                                add("condition", format!("{c}\n\n{value}").into_bytes());
                                add("condition", format!("\n{c}\n{value}").into_bytes());
                            }
                        }
                    }
                    "start" | "end" => {
                        if let Some(c) = v.as_str() {
                            add("condition", format!("{c}\n\n").into_bytes());
                        }
                    }
                    "duration"
                    | "interval"
                    | "initialDelay"
                    | "timeout"
                    | "abortScaleDownDelaySeconds"
                    | "scaleDownDelaySeconds"
                    | "progressDeadlineSeconds" => {
                        if let Some(t) = scalar_text(v) {
                            add("duration", t.into_bytes());
                        }
                    }
                    "limits" | "requests" => {
                        if let Some(map) = v.as_object() {
                            for q in map.values().filter_map(scalar_text) {
                                add("quantity", q.into_bytes());
                            }
                        }
                    }
                    "query" | "address" | "url" => {
                        if let Some(q) = v.as_str() {
                            add(
                                "args",
                                format!(
                                    "{q}\nservice=checkout\nnamespace=shop\ntoken=secret:s3cr3t"
                                )
                                .into_bytes(),
                            );
                        }
                    }
                    "template" if kind == "Rollout" || kind == "Deployment" => {
                        if let Ok(bytes) = serde_json::to_vec(v) {
                            add("pod_template_hash", bytes);
                        }
                    }
                    "metrics" => {
                        for m in v.as_array().into_iter().flatten() {
                            if let Ok(line) = serde_json::to_string(m) {
                                add(
                                    "args",
                                    format!("{{{{args.service}}}}\nservice=web\n{line}")
                                        .into_bytes(),
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let Ok(bytes) = serde_json::to_vec(&doc) {
                match kind.as_str() {
                    "Ingress" => {
                        for w in [10u8, 20, 60, 110] {
                            add("ingress", [&[w][..], &bytes].concat());
                        }
                    }
                    "VirtualService" => {
                        for which in 0..2u8 {
                            add("virtual_service", [&[30, which][..], &bytes].concat());
                        }
                    }
                    "DestinationRule" => add("virtual_service", [&[30, 2][..], &bytes].concat()),
                    _ => {}
                }
            }
        }
    }
    for bytes in synthetic_seeds() {
        add(bytes.0, bytes.1);
    }
    out
}

/// Shapes the fixtures do not hold.
fn synthetic_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let prom = [
        json!({"status": "success", "data": {"resultType": "scalar", "result": [1700000000.1, "0.99"]}}),
        json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"job": "web"}, "value": [1700000000, "1"]},
            {"metric": {}, "value": [1700000000, "NaN"]}]}}),
        json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1700000000, "1"], [1700000015, "+Inf"]]}]},
            "warnings": ["PromQL info: metric might not be a counter"]}),
        json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}),
        json!({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}),
    ];
    for (i, p) in prom.iter().enumerate() {
        let status = if p["status"] == "error" { 3 } else { 0 };
        if let Ok(bytes) = serde_json::to_vec(p) {
            out.push((
                "prometheus_response",
                [&[status + i as u8 % 3][..], &bytes].concat(),
            ));
        }
    }
    out.push((
        "prometheus_response",
        b"\x05<html>bad gateway</html>".to_vec(),
    ));
    for d in [
        "1h30m",
        "250ms",
        "-5s",
        "1.5h",
        "0",
        "9223372036854775807",
        "2562047h47m16s",
    ] {
        out.push(("duration", d.as_bytes().to_vec()));
    }
    for q in ["100m", "1.5Gi", "-0", "1e3", "+1E-3", ".5", "5."] {
        out.push(("quantity", q.as_bytes().to_vec()));
    }
    for c in [
        "result[0] >= 0.95 && all(result, {# > 0})\n\n[0.97, 0.99]",
        "len(result) == 0 || isNaN(result[0])\nresult[0] > 10\n[\"NaN\"]",
        "default(result, 0) < 5\n\nnull",
        "asInt(result) == 3\n\n\"3\"",
        "now() - duration(\"5m\")\n\n",
    ] {
        out.push(("condition", c.as_bytes().to_vec()));
    }
    let vs = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
        "metadata": {"name": "web-vs", "namespace": "shop", "resourceVersion": "7"},
        "spec": {"hosts": ["web.test"],
            "http": [{"name": "primary", "route": [
                {"destination": {"host": "web-stable"}, "weight": 100},
                {"destination": {"host": "web-canary"}, "weight": 0}]}],
            "tls": [{"match": [{"port": 443, "sniHosts": ["web.test"]}], "route": [
                {"destination": {"host": "web-stable"}, "weight": 100},
                {"destination": {"host": "web-canary"}, "weight": 0}]}],
            "tcp": [{"match": [{"port": 5432}], "route": [
                {"destination": {"host": "web-stable"}, "weight": 100},
                {"destination": {"host": "web-canary"}, "weight": 0}]}]}});
    let dr = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": {"name": "web-dr", "namespace": "shop", "resourceVersion": "3"},
        "spec": {"host": "web", "subsets": [
            {"name": "stable", "labels": {"app": "web"}},
            {"name": "canary", "labels": {"app": "web"}}]}});
    let ing = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "4",
            "annotations": {"kubernetes.io/ingress.class": "nginx"}},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "web.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-stable",
                "port": {"number": 80}}}}]}}]}});
    for (target, head, v) in [
        ("virtual_service", vec![40u8, 0], &vs),
        ("virtual_service", vec![40u8, 1], &vs),
        ("virtual_service", vec![40u8, 2], &dr),
        ("ingress", vec![40u8], &ing),
    ] {
        if let Ok(bytes) = serde_json::to_vec(v) {
            out.push((target, [head, bytes].concat()));
        }
    }
    out.push((
        "args",
        b"rate(http_requests_total{service=\"{{ args.service }}\",code=~\"5..\"}[{{args.window}}])\nservice=web\nwindow=5m".to_vec(),
    ));
    out.push(("lint", b"a: &a [1]\nb: *a\n".to_vec()));
    out
}
