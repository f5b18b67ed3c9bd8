//! The Kustomize configuration for Rollouts (`charts/sluice/kustomize/sluice-transform.yaml`),
//! run by the kustomize built into `kubectl` (`kubectl kustomize`).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const KUSTOMIZATION: &str = r#"resources: [resources.yaml]
namePrefix: prod-
labels:
- pairs: {team: shop}
  includeSelectors: true
  includeTemplates: true
configMapGenerator:
- name: web-config
  literals: [LEVEL=info]
# What `kustomize edit set image web=registry.example.com/web:2.0 web-migrate=*:2.0` writes.
images:
- name: web
  newName: registry.example.com/web
  newTag: "2.0"
- name: web-migrate
  newTag: "2.0"
"#;

/// Builds the fixture with `kubectl kustomize`; Err(stderr) when kustomize refuses it.
fn build(with_configuration: bool, extra: &str) -> Result<Vec<Value>, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo.join("tests/fixtures/kustomize/resources.yaml"),
        dir.path().join("resources.yaml"),
    )
    .unwrap();
    let mut k = String::from(KUSTOMIZATION);
    if with_configuration {
        std::fs::copy(
            repo.join("charts/sluice/kustomize/sluice-transform.yaml"),
            dir.path().join("sluice-transform.yaml"),
        )
        .unwrap();
        k.push_str("configurations: [sluice-transform.yaml]\n");
    }
    k.push_str(extra);
    std::fs::write(dir.path().join("kustomization.yaml"), k).unwrap();
    let out = Command::new(sluice_test_support::tools::kubectl())
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .expect("kubectl runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            use serde::Deserialize;
            serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap()
        })
        .collect())
}

fn rollout(docs: &[Value]) -> &Value {
    docs.iter()
        .find(|d| d["kind"] == "Rollout")
        .expect("a Rollout")
}

fn name_of<'a>(docs: &'a [Value], kind: &str) -> &'a str {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .and_then(|d| d["metadata"]["name"].as_str())
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn images_set_by_kustomize_reach_the_rollout_containers() {
    let docs = build(true, "").unwrap();
    let spec = &rollout(&docs)["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["image"],
        "registry.example.com/web:2.0"
    );
    assert_eq!(spec["initContainers"][0]["image"], "web-migrate:2.0");
}

#[test]
fn names_labels_and_replicas_follow_the_kustomization() {
    let docs = build(true, "replicas:\n- name: web\n  count: 7\n").unwrap();
    let ro = rollout(&docs);
    assert_eq!(ro["metadata"]["name"], "prod-web");
    assert_eq!(ro["spec"]["replicas"], 7);
    let canary = &ro["spec"]["strategy"]["canary"];
    assert_eq!(canary["canaryService"], "prod-web-canary");
    assert_eq!(canary["stableService"], "prod-web-stable");
    assert_eq!(
        canary["trafficRouting"]["nginx"]["stableIngress"],
        name_of(&docs, "Ingress")
    );
    assert_eq!(
        canary["steps"][1]["analysis"]["templates"][0]["templateName"],
        name_of(&docs, "AnalysisTemplate")
    );
    assert_eq!(name_of(&docs, "AnalysisTemplate"), "prod-success-rate");
    // The generated ConfigMap's hashed name and the prefixed Secret reach the pod template.
    let pod = &ro["spec"]["template"]["spec"];
    let cm = name_of(&docs, "ConfigMap");
    assert!(cm.starts_with("prod-web-config-"), "{cm}");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], cm);
    assert_eq!(
        pod["containers"][0]["envFrom"][0]["secretRef"]["name"],
        "prod-web-secrets"
    );
    // Selector and template labels stay in step (the Rollout would be invalid otherwise).
    assert_eq!(ro["spec"]["selector"]["matchLabels"]["team"], "shop");
    assert_eq!(ro["spec"]["template"]["metadata"]["labels"]["team"], "shop");
}

#[test]
fn without_the_configuration_kustomize_breaks_a_rollout() {
    // The control: these are the failures the configuration exists to prevent.
    let err = build(false, "replicas:\n- name: web\n  count: 7\n").unwrap_err();
    assert!(err.contains("does not match a config"), "{err}");
    let docs = build(false, "").unwrap();
    let canary = &rollout(&docs)["spec"]["strategy"]["canary"];
    assert_eq!(
        canary["canaryService"], "web-canary",
        "not renamed without it"
    );
    let pod = &rollout(&docs)["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "web-config");
}
