//! What the routers' pure tests share: the traffic a plan asks for, and patches applied as the
//! API server applies them.

use serde_json::Value;
use sluice::plan::ManagedRoutes;
use sluice::traffic::DesiredTraffic;

/// The traffic of a plan at canary `weight` (of 100), with no managed routes.
pub fn desired(weight: i32) -> DesiredTraffic {
    DesiredTraffic {
        weight,
        max_weight: 100,
        canary_hash: None,
        stable_hash: None,
        legacy_label_hashes: Vec::new(),
        managed_routes: ManagedRoutes::default(),
    }
}

/// Applies a JSON patch the way the API server does (its `test` operations included).
pub fn patched(live: &Value, patch: &json_patch::Patch) -> Value {
    let mut out = live.clone();
    json_patch::patch(&mut out, patch).expect("the patch applies to the object it was made from");
    out
}

/// A YAML text as JSON.
pub fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap_or_else(|e| panic!("YAML: {e}\n{s}"))
}
