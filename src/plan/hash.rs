//! Pod-template and step hashes.
//!
//! The pod-template hash names ReplicaSets (`rollouts-pod-template-hash`), so it must never
//! change for an unchanged template across Sluice releases: if it did, an upgrade of Sluice would
//! start a new rollout of every application (Argo Rollouts v1.9.0 did exactly that, issue #4696).
//!
//! Algorithm (version 2, pinned by tests):
//! 1. Canonicalise the `PodTemplateSpec` ([`canonical_template`]): serialise it to JSON through
//!    `serde_json::Value`, which orders object keys alphabetically and omits absent fields, then
//!    remove every value the API server fills in by itself (`imagePullPolicy`, `dnsPolicy`,
//!    `terminationMessagePath`, probe periods, ...), empty lists, and the controller's own hash
//!    label. A template read back from a ReplicaSet (defaulted by the API server) and the same
//!    template as written in the Rollout then hash alike, so `undo` and a Git revert find the
//!    existing ReplicaSet again.
//! 2. Hash the compact JSON bytes with 32-bit FNV-1a. When `collisionCount` is set, hash its
//!    decimal representation after the JSON.
//! 3. Write the 32-bit value in decimal and map each digit byte `b` to
//!    `"bcdfghjklmnpqrstvwxz2456789"[b % 27]` (Kubernetes' `SafeEncodeString`), which avoids
//!    vowels (no accidental words) and look-alike characters.
//!
//! Version 1 hashed the template as written, without step 1's removals. For a template that
//! spells out none of those values both versions give the same hash. For one that does,
//! ReplicaSets created by version 1 carry [`legacy_pod_template_hash`]; the planner keeps
//! using such a ReplicaSet rather than starting a new one, so an upgrade replaces no pod.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::constants::{LEGACY_POD_TEMPLATE_HASH_LABEL, POD_TEMPLATE_HASH_LABEL};
use crate::api::rollout::CanaryStep;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a(hash: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u32::from(*b)).wrapping_mul(FNV_PRIME))
}

fn safe_encode(value: u32) -> String {
    value
        .to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

fn canonical_json<T: Serialize>(value: &T) -> String {
    // Going through Value sorts map keys (serde_json without `preserve_order`).
    serde_json::to_value(value)
        .map(|v| v.to_string())
        .unwrap_or_default()
}

fn hash_json(json: &str, collision_count: Option<i32>) -> String {
    let mut hash = fnv1a(FNV_OFFSET, json.as_bytes());
    if let Some(count) = collision_count {
        hash = fnv1a(hash, count.to_string().as_bytes());
    }
    safe_encode(hash)
}

/// Hash of a pod template, as used in the `rollouts-pod-template-hash` label: the hash of its
/// [`canonical_template`].
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    hash_json(&canonical_template(template).to_string(), collision_count)
}

/// Hash of a pod template as version 1 computed it (the template as written). ReplicaSets
/// created before the canonical form carry it.
pub fn legacy_pod_template_hash(
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> String {
    hash_json(&canonical_json(template), collision_count)
}

/// True when two templates make the same pods: equal once the values the API server defaults
/// and the controller's hash label are set aside.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical_template(a) == canonical_template(b)
}

/// The template without what the API server would fill in itself (Kubernetes'
/// `SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_Probe`, the volume sources'
/// `defaultMode`, ...): a value equal to its default is removed, as are empty lists (Go drops
/// them when it writes the object back) and the controller's `rollouts-pod-template-hash`
/// label. Values that differ from the default are kept, so templates that make different pods
/// never compare equal.
pub fn canonical_template(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or_default();
    drop_empty_lists(&mut value);
    if let Some(t) = value.as_object_mut() {
        if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
            canonical_metadata(meta);
        }
        if let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut) {
            canonical_pod_spec(spec);
        }
        remove_if_empty_object(t, "metadata");
    }
    value
}

/// Most groups of defaulted fields [`spelling_with_hash`] tries in and out (2^14 spellings,
/// a fraction of a second).
const MAX_SPELLING_GROUPS: usize = 14;

/// Defaults that manifests practically never spell out (only the API server writes them): tried
/// all in or all out, not one by one.
const RARELY_WRITTEN: &[&str] = &[
    "resources",
    "schedulerName",
    "securityContext",
    "terminationMessagePath",
    "terminationMessagePolicy",
];

/// A spelling of `template` (the same pods) whose hash — canonical or version 1 — is `hash`,
/// if one is found: the template of a ReplicaSet created by version 1 from a manifest that
/// spelled out some defaults, as that manifest spelled them. Written back into the Rollout
/// (`undo`), it names that ReplicaSet again instead of a copy of it. The defaults are tried in
/// and out by field name (`imagePullPolicy` in every container or in none, ...); the spelling
/// with every default is tried too (a manifest exported from a cluster).
pub fn spelling_with_hash(
    template: &PodTemplateSpec,
    hash: &str,
    collision_count: Option<i32>,
) -> Option<Value> {
    let canonical = canonical_template(template);
    if hash_json(&canonical.to_string(), collision_count) == hash {
        return Some(canonical);
    }
    let mut stored = serde_json::to_value(template).ok()?;
    if let Some(labels) = stored
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
        labels.remove(LEGACY_POD_TEMPLATE_HASH_LABEL);
    }
    if hash_json(&stored.to_string(), collision_count) == hash {
        return Some(stored);
    }
    let mut removed = Vec::new();
    removed_values(&stored, &canonical, &mut Vec::new(), &mut removed);
    let mut groups: Vec<&str> = removed
        .iter()
        .filter_map(|(path, _)| group(path))
        .filter(|g| !RARELY_WRITTEN.contains(g))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.len() > MAX_SPELLING_GROUPS {
        return None;
    }
    (1u32..1 << groups.len()).find_map(|mask| {
        let mut spelling = canonical.clone();
        let chosen = |g: Option<&str>| {
            g.and_then(|g| groups.iter().position(|x| *x == g))
                .is_some_and(|i| mask & (1 << i) != 0)
        };
        for (path, value) in removed.iter().filter(|(path, _)| chosen(group(path))) {
            set_at(&mut spelling, path, value.clone());
        }
        (hash_json(&spelling.to_string(), collision_count) == hash).then_some(spelling)
    })
}

/// A step in a JSON path: an object key or a list index.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The field name a removed value is grouped by: the last key of its path.
fn group(path: &[Step]) -> Option<&str> {
    path.iter().rev().find_map(|s| match s {
        Step::Key(k) => Some(k.as_str()),
        Step::Index(_) => None,
    })
}

/// The values `full` has and `reduced` (the same document with values removed) lacks, with
/// their paths.
fn removed_values(
    full: &Value,
    reduced: &Value,
    path: &mut Vec<Step>,
    out: &mut Vec<(Vec<Step>, Value)>,
) {
    match (full, reduced) {
        (Value::Object(f), Value::Object(r)) => {
            for (key, value) in f {
                path.push(Step::Key(key.clone()));
                match r.get(key) {
                    Some(kept) => removed_values(value, kept, path, out),
                    None => out.push((path.clone(), value.clone())),
                }
                path.pop();
            }
        }
        (Value::Array(f), Value::Array(r)) if f.len() == r.len() => {
            for (i, (value, kept)) in f.iter().zip(r).enumerate() {
                path.push(Step::Index(i));
                removed_values(value, kept, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Puts `value` back at `path` (whose parent exists: only whole values were removed).
fn set_at(doc: &mut Value, path: &[Step], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = doc;
    for step in parents {
        let next = match step {
            Step::Key(k) => at.get_mut(k.as_str()),
            Step::Index(i) => at.get_mut(*i),
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
    if let (Step::Key(k), Some(map)) = (last, at.as_object_mut()) {
        map.insert(k.clone(), value);
    }
}

/// Removes `key` when its value is `default`.
fn remove_default(map: &mut Map<String, Value>, key: &str, default: Value) {
    if map.get(key) == Some(&default) {
        map.remove(key);
    }
}

fn remove_if_empty_object(map: &mut Map<String, Value>, key: &str) {
    if map
        .get(key)
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        map.remove(key);
    }
}

fn drop_empty_lists(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
            map.values_mut().for_each(drop_empty_lists);
        }
        Value::Array(list) => list.iter_mut().for_each(drop_empty_lists),
        _ => {}
    }
}

fn objects<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

fn canonical_metadata(meta: &mut Map<String, Value>) {
    // The hash label is the ReplicaSet's addition, under either key, never the user's.
    if let Some(labels) = object(meta, "labels") {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
        labels.remove(LEGACY_POD_TEMPLATE_HASH_LABEL);
    }
    remove_if_empty_object(meta, "labels");
    remove_if_empty_object(meta, "annotations");
}

fn canonical_pod_spec(spec: &mut Map<String, Value>) {
    remove_default(spec, "dnsPolicy", "ClusterFirst".into());
    remove_default(spec, "restartPolicy", "Always".into());
    remove_default(spec, "schedulerName", "default-scheduler".into());
    remove_default(spec, "terminationGracePeriodSeconds", 30.into());
    remove_if_empty_object(spec, "securityContext");
    remove_if_empty_object(spec, "nodeSelector");
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        objects(spec, key).for_each(canonical_container);
    }
    objects(spec, "volumes").for_each(canonical_volume);
}

/// `imagePullPolicy` defaults to `Always` for a `:latest` or untagged image (without a
/// digest), otherwise to `IfNotPresent`.
fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

fn canonical_container(c: &mut Map<String, Value>) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    remove_default(c, "imagePullPolicy", default_pull_policy(&image).into());
    remove_default(c, "terminationMessagePath", "/dev/termination-log".into());
    remove_default(c, "terminationMessagePolicy", "File".into());
    remove_if_empty_object(c, "resources");
    for port in objects(c, "ports") {
        remove_default(port, "protocol", "TCP".into());
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = object(c, key) {
            remove_default(probe, "timeoutSeconds", 1.into());
            remove_default(probe, "periodSeconds", 10.into());
            remove_default(probe, "successThreshold", 1.into());
            remove_default(probe, "failureThreshold", 3.into());
            canonical_handler(probe);
        }
    }
    if let Some(lifecycle) = object(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(handler) = object(lifecycle, key) {
                canonical_handler(handler);
            }
        }
    }
    for env in objects(c, "env") {
        if let Some(field_ref) = object(env, "valueFrom").and_then(|v| object(v, "fieldRef")) {
            remove_default(field_ref, "apiVersion", "v1".into());
        }
    }
}

/// A probe's or lifecycle hook's `httpGet` defaults its path to `/` and its scheme to HTTP.
fn canonical_handler(handler: &mut Map<String, Value>) {
    if let Some(get) = object(handler, "httpGet") {
        remove_default(get, "path", "/".into());
        remove_default(get, "scheme", "HTTP".into());
    }
}

/// Volume sources default their file mode to 0644 (420), projected service-account tokens
/// their lifetime to an hour, and a volume without a source is an `emptyDir`.
fn canonical_volume(v: &mut Map<String, Value>) {
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(source) = object(v, key) {
            remove_default(source, "defaultMode", 420.into());
        }
    }
    if let Some(source) = object(v, "downwardAPI") {
        canonical_downward_items(source);
    }
    if let Some(projected) = object(v, "projected") {
        for source in objects(projected, "sources") {
            if let Some(token) = object(source, "serviceAccountToken") {
                remove_default(token, "expirationSeconds", 3600.into());
            }
            if let Some(downward) = object(source, "downwardAPI") {
                canonical_downward_items(downward);
            }
        }
    }
    if let Some(host_path) = object(v, "hostPath") {
        remove_default(host_path, "type", "".into());
    }
    let only_empty_dir = v.len() == 2
        && v.contains_key("name")
        && v.get("emptyDir") == Some(&Value::Object(Map::new()));
    if only_empty_dir {
        v.remove("emptyDir");
    }
}

fn canonical_downward_items(source: &mut Map<String, Value>) {
    for item in objects(source, "items") {
        if let Some(field_ref) = object(item, "fieldRef") {
            remove_default(field_ref, "apiVersion", "v1".into());
        }
    }
}

/// Hash of the canary steps; when it changes during an update the steps restart.
pub fn steps_hash(steps: &[CanaryStep]) -> String {
    safe_encode(fnv1a(FNV_OFFSET, canonical_json(&steps).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0x811c9dc5);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xe40c292c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn hash_of_known_templates_never_changes() {
        // Pinned: changing any of these values restarts every rollout on upgrade.
        assert_eq!(
            pod_template_hash(&template("nginx:1.25"), None),
            PINNED_NGINX_125
        );
        assert_eq!(
            pod_template_hash(&template("nginx:1.26"), None),
            PINNED_NGINX_126
        );
        assert_eq!(
            pod_template_hash(&template("nginx:1.25"), Some(1)),
            PINNED_NGINX_125_C1
        );
    }

    // Computed independently of this code (Python: json.dumps(sort_keys=True, compact) + FNV-1a).
    const PINNED_NGINX_125: &str = "59bd5955b7";
    const PINNED_NGINX_126: &str = "65b7547b54";
    const PINNED_NGINX_125_C1: &str = "5d8b664858";

    #[test]
    fn key_order_in_the_manifest_does_not_matter() {
        let a: PodTemplateSpec = serde_json::from_str(
            r#"{"metadata":{"labels":{"b":"2","a":"1"}},"spec":{"containers":[{"image":"x","name":"c"}]}}"#,
        )
        .unwrap();
        let b: PodTemplateSpec = serde_json::from_str(
            r#"{"spec":{"containers":[{"name":"c","image":"x"}]},"metadata":{"labels":{"a":"1","b":"2"}}}"#,
        )
        .unwrap();
        assert_eq!(pod_template_hash(&a, None), pod_template_hash(&b, None));
    }

    /// What a real API server returns for `template("nginx:1.25")` with a port and a probe,
    /// once it filled in its defaults (and the controller its hash label).
    fn defaulted(image: &str, pull: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web", "rollouts-pod-template-hash": "abc"}},
            "spec": {
                "containers": [{
                    "name": "web", "image": image, "imagePullPolicy": pull,
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {
                        "httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
                        "timeoutSeconds": 1, "periodSeconds": 10,
                        "successThreshold": 1, "failureThreshold": 3
                    },
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName", "apiVersion": "v1"}}}],
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File"
                }],
                "volumes": [
                    {"name": "config", "configMap": {"name": "web", "defaultMode": 420}},
                    {"name": "scratch", "emptyDir": {}}
                ],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler", "securityContext": {},
                "terminationGracePeriodSeconds": 30
            }
        }))
        .unwrap()
    }

    fn stored_without_label() -> PodTemplateSpec {
        let mut t = defaulted("nginx:1.25", "IfNotPresent");
        let labels = t.metadata.as_mut().unwrap().labels.as_mut().unwrap();
        labels.remove(LEGACY_POD_TEMPLATE_HASH_LABEL);
        t
    }

    fn as_written(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "web", "image": image,
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"port": 8080}},
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "args": []
                }],
                "volumes": [{"name": "config", "configMap": {"name": "web"}}, {"name": "scratch"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_defaulted_template_hashes_as_the_template_written() {
        let written = as_written("nginx:1.25");
        let read_back = defaulted("nginx:1.25", "IfNotPresent");
        assert_eq!(
            pod_template_hash(&written, None),
            pod_template_hash(&read_back, None)
        );
        assert!(same_template(&written, &read_back));
        assert_ne!(
            legacy_pod_template_hash(&written, None),
            legacy_pod_template_hash(&read_back, None),
            "version 1 told them apart: the bug"
        );
    }

    #[test]
    fn the_hash_label_counts_under_neither_key() {
        let legacy = defaulted("nginx:1.25", "IfNotPresent");
        let mut current = legacy.clone();
        let labels = current.metadata.as_mut().unwrap().labels.as_mut().unwrap();
        let hash = labels.remove(LEGACY_POD_TEMPLATE_HASH_LABEL).unwrap();
        labels.insert(POD_TEMPLATE_HASH_LABEL.into(), hash);
        let written = as_written("nginx:1.25");
        assert_eq!(
            pod_template_hash(&current, None),
            pod_template_hash(&written, None)
        );
        assert_eq!(
            pod_template_hash(&legacy, None),
            pod_template_hash(&written, None)
        );
    }

    #[test]
    fn a_value_other_than_the_default_still_counts() {
        let written = as_written("nginx:1.25");
        // `Always` is not the default for a tagged image: the pods differ in how they pull.
        let always = defaulted("nginx:1.25", "Always");
        assert!(!same_template(&written, &always));
        assert_ne!(
            pod_template_hash(&written, None),
            pod_template_hash(&always, None)
        );
        let mut other_period = defaulted("nginx:1.25", "IfNotPresent");
        let probe = other_period.spec.as_mut().unwrap().containers[0]
            .readiness_probe
            .as_mut()
            .unwrap();
        probe.period_seconds = Some(5);
        assert!(!same_template(&written, &other_period));
        assert!(!same_template(
            &as_written("nginx:1.25"),
            &as_written("nginx:1.26")
        ));
    }

    #[test]
    fn the_default_pull_policy_depends_on_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("registry:5000/nginx", "Always"),
            ("registry:5000/nginx:1.25", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
            ("nginx:latest@sha256:abcd", "Always"),
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
        // An untagged image read back with `Always` is the template written without it.
        assert!(same_template(
            &template("nginx"),
            &defaulted_minimal("nginx", "Always")
        ));
        assert!(!same_template(
            &template("nginx"),
            &defaulted_minimal("nginx", "IfNotPresent")
        ));
    }

    fn defaulted_minimal(image: &str, pull: &str) -> PodTemplateSpec {
        let mut t = template(image);
        t.spec.as_mut().unwrap().containers[0].image_pull_policy = Some(pull.into());
        t
    }

    #[test]
    fn a_template_without_defaults_keeps_its_version_1_hash() {
        // So an upgrade renames no ReplicaSet of such a template.
        for t in [template("nginx:1.25"), template("web:2")] {
            assert_eq!(
                pod_template_hash(&t, None),
                legacy_pod_template_hash(&t, None)
            );
        }
    }

    #[test]
    fn an_explicit_empty_dir_and_a_volume_without_source_are_the_same() {
        let with = |v: serde_json::Value| -> PodTemplateSpec {
            serde_json::from_value(serde_json::json!({
                "spec": {"containers": [{"name": "c", "image": "x:1"}], "volumes": [v]}
            }))
            .unwrap()
        };
        assert!(same_template(
            &with(serde_json::json!({"name": "a"})),
            &with(serde_json::json!({"name": "a", "emptyDir": {}}))
        ));
        assert!(!same_template(
            &with(serde_json::json!({"name": "a", "emptyDir": {"medium": "Memory"}})),
            &with(serde_json::json!({"name": "a", "emptyDir": {}}))
        ));
    }

    #[test]
    fn a_version_1_replica_set_is_found_again_by_its_spelling() {
        // Written with some defaults spelled out, and hashed as written by version 1.
        let mut written = as_written("nginx:1.25");
        let c = &mut written.spec.as_mut().unwrap().containers[0];
        c.image_pull_policy = Some("IfNotPresent".into());
        // An empty list is not kept by the API server: it cannot be spelled back.
        c.args = None;
        c.ports.as_mut().unwrap()[0].protocol = Some("TCP".into());
        written.spec.as_mut().unwrap().dns_policy = Some("ClusterFirst".into());
        let label = legacy_pod_template_hash(&written, None);
        assert_ne!(label, pod_template_hash(&written, None));
        // Read back from its ReplicaSet with every default filled in.
        let stored = defaulted("nginx:1.25", "IfNotPresent");
        let spelling = spelling_with_hash(&stored, &label, None).expect("found");
        let spelling: PodTemplateSpec = serde_json::from_value(spelling).unwrap();
        assert_eq!(legacy_pod_template_hash(&spelling, None), label);
        assert!(same_template(&spelling, &written));
        // A template made by the canonical hash is spelled canonically.
        let new = pod_template_hash(&written, None);
        let spelling = spelling_with_hash(&stored, &new, None).unwrap();
        assert_eq!(spelling, canonical_template(&written));
        // So is a manifest exported with every default.
        let exported = legacy_pod_template_hash(&stored_without_label(), None);
        let spelling = spelling_with_hash(&stored, &exported, None).unwrap();
        assert_eq!(
            spelling,
            serde_json::to_value(stored_without_label()).unwrap()
        );
        // A hash of other pods is not found.
        assert_eq!(
            spelling_with_hash(&stored, &pod_template_hash(&template("x:1"), None), None),
            None
        );
    }

    #[test]
    fn hash_uses_only_the_safe_alphabet() {
        let h = pod_template_hash(&template("any"), None);
        assert!(!h.is_empty());
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
    }
}
