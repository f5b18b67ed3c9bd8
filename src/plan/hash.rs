//! Pod-template and step hashes.
//!
//! The pod-template hash names ReplicaSets (`rollouts-pod-template-hash`), so it must never
//! change for an unchanged template across Sluice releases: if it did, an upgrade of Sluice would
//! start a new rollout of every application (Argo Rollouts v1.9.0 did exactly that, issue #4696).
//!
//! Algorithm (version 1, pinned by tests):
//! 1. Serialise the `PodTemplateSpec` to JSON through `serde_json::Value`, which orders object
//!    keys alphabetically and omits absent fields, so field order in the manifest and in the Rust
//!    types does not matter.
//! 2. Hash the compact JSON bytes with 32-bit FNV-1a. When `collisionCount` is set, hash its
//!    decimal representation after the JSON.
//! 3. Write the 32-bit value in decimal and map each digit byte `b` to
//!    `"bcdfghjklmnpqrstvwxz2456789"[b % 27]` (Kubernetes' `SafeEncodeString`), which avoids
//!    vowels (no accidental words) and look-alike characters.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::Serialize;

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

/// Hash of a pod template, as used in the `rollouts-pod-template-hash` label.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash = fnv1a(FNV_OFFSET, canonical_json(template).as_bytes());
    if let Some(count) = collision_count {
        hash = fnv1a(hash, count.to_string().as_bytes());
    }
    safe_encode(hash)
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

    #[test]
    fn hash_uses_only_the_safe_alphabet() {
        let h = pod_template_hash(&template("any"), None);
        assert!(!h.is_empty());
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{h}");
    }
}
