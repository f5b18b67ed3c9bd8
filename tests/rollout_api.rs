//! The Rollout API: Argo compatibility, CEL rules, and cluster-free validation where an invalid
//! spec names its field and changes nothing.

use std::time::Duration;

use sluice::api::rollout::Rollout;
use sluice::api::validation::validate_rollout_spec;
use sluice::plan::plan;
use sluice_test_support::world::*;

/// An Argo Rollouts manifest from its documentation, with only the apiVersion changed.
const ARGO_NGINX_EXAMPLE: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: rollouts-demo
spec:
  replicas: 5
  revisionHistoryLimit: 2
  selector:
    matchLabels:
      app: rollouts-demo
  template:
    metadata:
      labels:
        app: rollouts-demo
    spec:
      containers:
      - name: rollouts-demo
        image: argoproj/rollouts-demo:blue
        ports:
        - name: http
          containerPort: 8080
          protocol: TCP
        resources:
          requests:
            memory: 32Mi
            cpu: 5m
  strategy:
    canary:
      canaryService: rollouts-demo-canary
      stableService: rollouts-demo-stable
      trafficRouting:
        nginx:
          stableIngress: rollouts-demo-stable
          additionalIngressAnnotations:
            canary-by-header: X-Canary
      analysis:
        templates:
        - templateName: success-rate
        startingStep: 2
        args:
        - name: service-name
          value: rollouts-demo-canary.default.svc.cluster.local
        - name: stable-hash
          valueFrom:
            podTemplateHashValue: Stable
      steps:
      - setWeight: 5
      - pause: {duration: 10}
      - setWeight: 20
      - pause: {duration: 1m}
      - setCanaryScale:
          replicas: 3
      - analysis:
          templates:
          - templateName: success-rate
          args:
          - name: service-name
            value: rollouts-demo-canary
      - setWeight: 40
      - pause: {}
      - setWeight: 60
      - pause: {duration: "30"}
"#;

#[test]
fn argo_manifest_with_only_the_api_version_changed_is_valid() {
    let r: Rollout = serde_yaml::from_str(ARGO_NGINX_EXAMPLE).unwrap();
    assert_eq!(validate_rollout_spec(&r.spec), vec![]);
    assert!(r.validate_cel().is_ok(), "{:?}", r.validate_cel());
    let canary = r.spec.strategy.canary.as_ref().unwrap();
    assert_eq!(canary.steps.len(), 10);
    assert_eq!(canary.analysis.as_ref().unwrap().starting_step, Some(2));
    // Round trip keeps every field.
    let back: serde_json::Value = serde_json::to_value(&r).unwrap();
    let orig: serde_json::Value = serde_yaml::from_str(ARGO_NGINX_EXAMPLE).unwrap();
    assert_eq!(back["spec"]["strategy"], orig["spec"]["strategy"]);
}

fn cel_error(yaml_patch: serde_json::Value) -> String {
    let mut value = serde_json::to_value(rollout(3, ROUTED)).unwrap();
    json_patch::merge(&mut value, &yaml_patch);
    let r: Rollout = serde_json::from_value(value).unwrap();
    match r.validate_cel() {
        Ok(()) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cel_rules_reject_what_the_api_server_can() {
    assert_eq!(cel_error(serde_json::json!({})), "");
    let same = cel_error(
        serde_json::json!({"spec": {"strategy": {"canary": {"canaryService": "web-stable"}}}}),
    );
    assert!(same.contains("must be different"), "{same}");
    let both =
        cel_error(serde_json::json!({"spec": {"strategy": {"blueGreen": {"activeService": "a"}}}}));
    assert!(
        both.contains("exactly one of canary or blueGreen"),
        "{both}"
    );
    let blue_green = |bg: serde_json::Value| {
        cel_error(serde_json::json!({"spec": {"strategy": {"canary": null, "blueGreen": bg}}}))
    };
    assert_eq!(
        blue_green(serde_json::json!({"activeService": "a", "previewService": "b"})),
        ""
    );
    let no_active = blue_green(serde_json::json!({"previewService": "b"}));
    assert!(
        no_active.contains("activeService is required"),
        "{no_active}"
    );
    let same = blue_green(serde_json::json!({"activeService": "a", "previewService": "a"}));
    assert!(same.contains("must be different"), "{same}");
    let weight = cel_error(
        serde_json::json!({"spec": {"strategy": {"canary": {"steps": [{"setWeight": 150}]}}}}),
    );
    assert!(weight.contains("maxTrafficWeight"), "{weight}");
    let ok_weight = cel_error(serde_json::json!({"spec": {"strategy": {"canary": {
        "steps": [{"setWeight": 150}], "trafficRouting": {"maxTrafficWeight": 1000}}}}}));
    assert_eq!(ok_weight, "");
    let no_services =
        cel_error(serde_json::json!({"spec": {"strategy": {"canary": {"canaryService": null}}}}));
    assert!(no_services.contains("requires both"), "{no_services}");
}

#[test]
fn cel_rule_makes_the_selector_immutable() {
    let old = rollout(3, ROUTED);
    let mut new = old.clone();
    new.spec.selector =
        Some(serde_json::from_value(serde_json::json!({"matchLabels": {"app": "other"}})).unwrap());
    let err = new.validate_cel_update(&old).unwrap_err().to_string();
    assert!(err.contains("selector is immutable"), "{err}");
    assert!(old.clone().validate_cel_update(&old).is_ok());
}

/// Argo's `TestWorkloadRefTemplate`: a workloadRef Rollout whose template has only labels is
/// refused (they would be ignored), as Argo refuses it; without them it is valid.
#[test]
fn a_workload_ref_rollout_must_have_an_empty_template() {
    let mut r = rollout(1, "{}");
    r.spec.selector = None;
    r.spec.workload_ref = Some(
        serde_json::from_value(
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}),
        )
        .unwrap(),
    );
    r.spec.template = Some(
        serde_json::from_value(serde_json::json!({"metadata": {"labels": {"app": "web"}}}))
            .unwrap(),
    );
    let errs = validate_rollout_spec(&r.spec);
    assert!(
        errs.iter()
            .any(|e| e.field == "spec.template" && e.message.contains("must be empty")),
        "{errs:?}"
    );
    r.spec.template = None;
    assert_eq!(validate_rollout_spec(&r.spec), vec![]);
}

/// Each invalid spec: (what to merge into a valid routed Rollout, field named, words in message).
fn invalid_cases() -> Vec<(&'static str, serde_json::Value, &'static str, &'static str)> {
    use serde_json::json;
    vec![
        (
            "weight above max",
            json!({"spec": {"strategy": {"canary": {"steps": [{"setWeight": 101}]}}}}),
            "spec.strategy.canary.steps[0].setWeight",
            "between 0 and 100",
        ),
        (
            "empty step",
            json!({"spec": {"strategy": {"canary": {"steps": [{}]}}}}),
            "spec.strategy.canary.steps[0]",
            "needs one of",
        ),
        (
            "two actions in a step",
            json!({"spec": {"strategy": {"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}}}),
            "spec.strategy.canary.steps[0]",
            "only one action",
        ),
        (
            "bad pause duration",
            json!({"spec": {"strategy": {"canary": {"steps": [{"pause": {"duration": "2d"}}]}}}}),
            "spec.strategy.canary.steps[0].pause.duration",
            "not a duration",
        ),
        (
            "same services",
            json!({"spec": {"strategy": {"canary": {"canaryService": "web-stable"}}}}),
            "spec.strategy.canary.stableService",
            "must differ",
        ),
        (
            "routing without canary service",
            json!({"spec": {"strategy": {"canary": {"canaryService": null}}}}),
            "spec.strategy.canary.canaryService",
            "required with trafficRouting",
        ),
        (
            "both strategies",
            json!({"spec": {"strategy": {"blueGreen": {"activeService": "x"}}}}),
            "spec.strategy",
            "exactly one",
        ),
        (
            "no ingress",
            json!({"spec": {"strategy": {"canary": {"trafficRouting": {"nginx": {"stableIngress": null}}}}}}),
            "spec.strategy.canary.trafficRouting.nginx.stableIngress",
            "one of stableIngress",
        ),
        (
            "both ingress forms",
            json!({"spec": {"strategy": {"canary": {"trafficRouting": {"nginx": {"stableIngresses": ["a"]}}}}}}),
            "spec.strategy.canary.trafficRouting.nginx.stableIngresses",
            "mutually exclusive",
        ),
        (
            "istio without vs",
            json!({"spec": {"strategy": {"canary": {"trafficRouting": {"nginx": null, "istio": {"destinationRule": {"name": "d", "canarySubsetName": "c", "stableSubsetName": "s"}}}}}}}),
            "spec.strategy.canary.trafficRouting.istio.virtualService",
            "required",
        ),
        (
            "same subsets",
            json!({"spec": {"strategy": {"canary": {"trafficRouting": {"nginx": null, "istio": {"virtualService": {"name": "v"}, "destinationRule": {"name": "d", "canarySubsetName": "x", "stableSubsetName": "x"}}}}}}}),
            "spec.strategy.canary.trafficRouting.istio.destinationRule.stableSubsetName",
            "must differ",
        ),
        (
            "header route on nginx",
            json!({"spec": {"strategy": {"canary": {"trafficRouting": {"managedRoutes": [{"name": "h"}]}, "steps": [{"setHeaderRoute": {"name": "h", "match": [{"headerName": "x", "headerValue": {"exact": "1"}}]}}]}}}}),
            "spec.strategy.canary.steps[0].setHeaderRoute",
            "requires trafficRouting.istio",
        ),
        (
            "unmanaged route",
            json!({"spec": {"strategy": {"canary": {"trafficRouting": {"nginx": null, "istio": {"virtualService": {"name": "v"}}}, "steps": [{"setHeaderRoute": {"name": "h"}}]}}}}),
            "spec.strategy.canary.steps[0].setHeaderRoute.name",
            "managedRoutes",
        ),
        (
            "canary scale two fields",
            json!({"spec": {"strategy": {"canary": {"steps": [{"setCanaryScale": {"weight": 10, "replicas": 2}}]}}}}),
            "spec.strategy.canary.steps[0].setCanaryScale",
            "exactly one",
        ),
        (
            "analysis without template",
            json!({"spec": {"strategy": {"canary": {"steps": [{"analysis": {"templates": []}}]}}}}),
            "spec.strategy.canary.steps[0].analysis.templates",
            "at least one",
        ),
        (
            "starting step too far",
            json!({"spec": {"strategy": {"canary": {"steps": [{"setWeight": 10}], "analysis": {"templates": [{"templateName": "t"}], "startingStep": 5}}}}}),
            "spec.strategy.canary.analysis.startingStep",
            "between 0",
        ),
        (
            "experiment step",
            json!({"spec": {"strategy": {"canary": {"steps": [{"experiment": {"templates": []}}]}}}}),
            "spec.strategy.canary.steps[0].experiment",
            "not supported",
        ),
        (
            "selector mismatch",
            json!({"spec": {"selector": {"matchLabels": {"app": "other"}}}}),
            "spec.selector.matchLabels",
            "does not match",
        ),
        (
            "deadline below minReady",
            json!({"spec": {"minReadySeconds": 30, "progressDeadlineSeconds": 10}}),
            "spec.progressDeadlineSeconds",
            "greater than minReadySeconds",
        ),
        (
            "dynamic and delay",
            json!({"spec": {"strategy": {"canary": {"dynamicStableScale": true, "scaleDownDelaySeconds": 5}}}}),
            "spec.strategy.canary.scaleDownDelaySeconds",
            "dynamicStableScale",
        ),
        (
            "blue green without an active service",
            json!({"spec": {"strategy": {"canary": null, "blueGreen": {"previewService": "x"}}}}),
            "spec.strategy.blueGreen.activeService",
            "is required",
        ),
        (
            "blue green preview is active",
            json!({"spec": {"strategy": {"canary": null, "blueGreen": {"activeService": "x", "previewService": "x"}}}}),
            "spec.strategy.blueGreen.previewService",
            "must differ from activeService",
        ),
        (
            "blue green preview larger than the rollout",
            json!({"spec": {"strategy": {"canary": null, "blueGreen": {"activeService": "x", "previewReplicaCount": 50}}}}),
            "spec.strategy.blueGreen.previewReplicaCount",
            "must not exceed spec.replicas",
        ),
        (
            "blue green with canary steps",
            json!({"spec": {"strategy": {"canary": null, "blueGreen": {"activeService": "x", "steps": [{"setWeight": 5}]}}}}),
            "spec.strategy.blueGreen.steps",
            "canary field",
        ),
        (
            "duplicate args",
            json!({"spec": {"strategy": {"canary": {"steps": [{"analysis": {"templates": [{"templateName": "t"}], "args": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]}}]}}}}),
            "spec.strategy.canary.steps[0].analysis.args[1].name",
            "duplicate",
        ),
        (
            "anti affinity both",
            json!({"spec": {"strategy": {"canary": {"antiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 5}, "requiredDuringSchedulingIgnoredDuringExecution": {}}}}}}),
            "spec.strategy.canary.antiAffinity",
            "exactly one",
        ),
    ]
}

fn basic_only_cases() -> Vec<(&'static str, serde_json::Value, &'static str, &'static str)> {
    use serde_json::json;
    vec![
        (
            "surge and unavailable zero",
            json!({"maxSurge": 0, "maxUnavailable": 0}),
            "spec.strategy.canary.maxUnavailable",
            "cannot both be 0",
        ),
        (
            "bad percentage",
            json!({"maxSurge": "abc"}),
            "spec.strategy.canary.maxSurge",
            "percentage",
        ),
        (
            "delay without routing",
            json!({"scaleDownDelaySeconds": 5}),
            "spec.strategy.canary.scaleDownDelaySeconds",
            "only be used with trafficRouting",
        ),
        (
            "canary scale without routing",
            json!({"steps": [{"setCanaryScale": {"replicas": 1}}]}),
            "spec.strategy.canary.steps[0].setCanaryScale",
            "requires trafficRouting",
        ),
    ]
}

fn check_invalid_spec_leaves_everything_untouched(
    name: &str,
    r: Rollout,
    field: &str,
    words: &str,
) {
    // A healthy world mid-update (weight 20), then the spec becomes invalid.
    let mut w = settled_world(4, ROUTED_STEPS);
    w.set_image("web:2");
    until(&mut w, 20, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    let before = (
        w.replica_sets.clone(),
        w.traffic.clone(),
        w.analysis_runs.clone(),
    );
    let mut broken = r;
    broken.spec.template = w
        .rollout
        .spec
        .template
        .clone()
        .filter(|_| broken.spec.template.is_some());
    broken.status = w.rollout.status.clone();
    let errs = validate_rollout_spec(&broken.spec);
    assert!(
        errs.iter()
            .any(|e| e.field == field && e.message.contains(words)),
        "{name}: expected {field}: …{words}…, got {errs:?}"
    );
    w.rollout = broken;
    let p = plan(&w.observe(), w.now);
    let invalid = p
        .invalid
        .clone()
        .unwrap_or_else(|| panic!("{name}: plan not invalid"));
    assert!(invalid.iter().any(|e| e.field == field), "{name}");
    assert_eq!(p.canary_weight, None, "{name}: no traffic change");
    assert_eq!(p.stable_service_hash, None, "{name}");
    assert_eq!(p.canary_service_hash, None, "{name}");
    assert!(
        p.create_analysis_runs.is_empty() && p.terminate_analysis_runs.is_empty(),
        "{name}"
    );
    assert!(p.delete_replica_sets.is_empty(), "{name}");
    assert_eq!(
        p.requeue_after, None,
        "{name}: waits for a change instead of looping"
    );
    w.apply(&p);
    w.advance(Duration::from_secs(5));
    w.reconcile();
    assert_eq!(
        before
            .0
            .iter()
            .map(|r| (&r.hash, r.replicas))
            .collect::<Vec<_>>(),
        w.replica_sets
            .iter()
            .map(|r| (&r.hash, r.replicas))
            .collect::<Vec<_>>(),
        "{name}: replica sets untouched"
    );
    assert_eq!(before.1, w.traffic, "{name}: traffic untouched");
    assert_eq!(before.2, w.analysis_runs, "{name}: analysis untouched");
    let st = w.rollout.status.as_ref().unwrap();
    assert_eq!(st.phase.map(|p| p.as_str()), Some("Degraded"), "{name}");
    let cond = st
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec")
        .unwrap();
    assert!(cond.message.contains(field), "{name}: {}", cond.message);
    assert!(
        w.events
            .iter()
            .any(|e| e.reason == "InvalidSpec" && e.message.contains(field)),
        "{name}"
    );
}

const ROUTED_STEPS: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting:
  nginx: {stableIngress: web}
steps:
- setWeight: 20
- pause: {}
"#;

#[test]
fn each_invalid_spec_names_its_field_and_changes_nothing() {
    for (name, patch, field, words) in invalid_cases() {
        let mut value = serde_json::to_value(rollout(4, ROUTED_STEPS)).unwrap();
        json_patch::merge(&mut value, &patch);
        let r: Rollout = serde_json::from_value(value).unwrap();
        check_invalid_spec_leaves_everything_untouched(name, r, field, words);
    }
}

#[test]
fn each_invalid_basic_canary_spec_names_its_field() {
    for (name, patch, field, words) in basic_only_cases() {
        let mut value = serde_json::to_value(rollout(4, "steps: [{setWeight: 10}]")).unwrap();
        json_patch::merge(&mut value["spec"]["strategy"]["canary"], &patch);
        let r: Rollout = serde_json::from_value(value).unwrap();
        let errs = validate_rollout_spec(&r.spec);
        assert!(
            errs.iter()
                .any(|e| e.field == field && e.message.contains(words)),
            "{name}: expected {field}: …{words}…, got {errs:?}"
        );
    }
}

#[test]
fn fixing_an_invalid_spec_resumes_the_rollout() {
    let mut w = settled_world(4, ROUTED_STEPS);
    w.set_image("web:2");
    until(&mut w, 20, "weight 20", |w| {
        w.traffic.canary_weight == Some(20)
    });
    let good = w.rollout.spec.clone();
    w.rollout.spec.strategy.canary.as_mut().unwrap().steps[0].set_weight = Some(200);
    tick(&mut w, 1);
    assert_eq!(phase(&w), "Degraded");
    w.rollout.spec = good;
    tick(&mut w, 1);
    assert!(
        w.rollout
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "InvalidSpec")
    );
    until(&mut w, 10, "paused at step 1", |w| phase(w) == "Paused");
}
