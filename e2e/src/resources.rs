//! The resource types the server knows: built-in kinds and those declared by CRDs.

use serde_json::Value;

use crate::error::ApiError;

/// How the `scale` subresource maps onto an object (CRD `subresources.scale`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleSpec {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

/// One `additionalPrinterColumns` entry, used for `kubectl get` tables.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Debug, Clone)]
pub struct VersionDef {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    /// Structural OpenAPI v3 schema of a custom resource (`None` for built-ins).
    pub schema: Option<Value>,
    pub status_subresource: bool,
    pub scale: Option<ScaleSpec>,
    pub printer_columns: Vec<PrinterColumn>,
    /// Identifies this schema for caches (compiled CEL rules); unique per CRD write.
    pub schema_id: u64,
}

static SCHEMA_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Checks and normalizes a built-in object by a round trip through its k8s-openapi type, which
/// drops unknown fields and rejects wrongly typed ones, as the real server's typed decoding does.
pub type TypedCheck = fn(&Value) -> Result<Value, String>;

/// A resource type, keyed by group and plural; all its versions share one storage (and both Event
/// APIs share one, see [`crate::events`]).
#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<VersionDef>,
    /// Whether `metadata.generation` is maintained (kinds with a spec).
    pub has_generation: bool,
    pub typed_check: Option<TypedCheck>,
    /// Set for resources served from a CustomResourceDefinition.
    pub custom: bool,
}

impl ResourceDef {
    pub fn version(&self, version: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.name == version && v.served)
    }

    pub fn storage_version(&self) -> &str {
        self.versions
            .iter()
            .find(|v| v.storage)
            .or(self.versions.first())
            .map(|v| v.name.as_str())
            .unwrap_or("v1")
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// `deployments.apps`, as the real server names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Where the objects are stored: events.k8s.io/v1 Events share the core/v1 Events' storage.
    pub fn key(&self) -> ResKey {
        if crate::events::is_events_api(self) {
            return crate::events::storage_key();
        }
        ResKey::new(&self.group, &self.plural)
    }

    pub fn has_status(&self, version: &str) -> bool {
        self.version(version).is_some_and(|v| v.status_subresource)
    }

    pub fn scale(&self, version: &str) -> Option<&ScaleSpec> {
        self.version(version).and_then(|v| v.scale.as_ref())
    }
}

/// Storage key of a resource type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResKey {
    pub group: String,
    pub plural: String,
}

impl ResKey {
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    status: bool,
    scale: bool,
    has_generation: bool,
    short_names: &[&str],
    typed_check: TypedCheck,
) -> ResourceDef {
    ResourceDef {
        group: group.to_string(),
        plural: plural.to_string(),
        singular: kind.to_lowercase(),
        kind: kind.to_string(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        versions: vec![VersionDef {
            name: version.to_string(),
            served: true,
            storage: true,
            schema: None,
            status_subresource: status,
            scale: scale.then(|| ScaleSpec {
                spec_replicas_path: ".spec.replicas".into(),
                status_replicas_path: ".status.replicas".into(),
                label_selector_path: Some(".status.selector".into()),
            }),
            printer_columns: Vec::new(),
            schema_id: 0,
        }],
        has_generation,
        typed_check: Some(typed_check),
        custom: false,
    }
}

/// The built-in resources served by every test cluster.
pub fn builtins() -> Vec<ResourceDef> {
    use k8s_openapi::api::batch::v1 as batch;
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coordination, core::v1 as core};
    use k8s_openapi::api::{
        discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
        policy::v1 as policy,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            true,
            false,
            false,
            &["ns"],
            typed::<core::Namespace>,
        ),
        builtin(
            "",
            "v1",
            "pods",
            "Pod",
            true,
            true,
            false,
            false,
            &["po"],
            typed::<core::Pod>,
        ),
        builtin(
            "",
            "v1",
            "services",
            "Service",
            true,
            true,
            false,
            false,
            &["svc"],
            typed::<core::Service>,
        ),
        builtin(
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            false,
            false,
            false,
            &["ep"],
            typed::<core::Endpoints>,
        ),
        builtin(
            "",
            "v1",
            "secrets",
            "Secret",
            true,
            false,
            false,
            false,
            &[],
            typed::<core::Secret>,
        ),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            false,
            false,
            false,
            &["cm"],
            typed::<core::ConfigMap>,
        ),
        builtin(
            "",
            "v1",
            "events",
            "Event",
            true,
            false,
            false,
            false,
            &["ev"],
            typed::<core::Event>,
        ),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            false,
            false,
            false,
            &["sa"],
            typed::<core::ServiceAccount>,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            true,
            true,
            true,
            &["deploy"],
            typed::<apps::Deployment>,
        ),
        builtin(
            "apps",
            "v1",
            "replicasets",
            "ReplicaSet",
            true,
            true,
            true,
            true,
            &["rs"],
            typed::<apps::ReplicaSet>,
        ),
        builtin(
            "batch",
            "v1",
            "jobs",
            "Job",
            true,
            true,
            false,
            true,
            &[],
            typed::<batch::Job>,
        ),
        builtin(
            "networking.k8s.io",
            "v1",
            "ingresses",
            "Ingress",
            true,
            true,
            false,
            true,
            &["ing"],
            typed::<networking::Ingress>,
        ),
        builtin(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            true,
            false,
            true,
            &["pdb"],
            typed::<policy::PodDisruptionBudget>,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            false,
            false,
            false,
            &[],
            typed::<coordination::Lease>,
        ),
        builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            false,
            false,
            false,
            &["ev"],
            typed::<events::Event>,
        ),
        builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            false,
            false,
            false,
            &[],
            typed::<discovery::EndpointSlice>,
        ),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            true,
            false,
            true,
            &["crd", "crds"],
            typed::<apiextensions::CustomResourceDefinition>,
        ),
    ]
}

/// Builds the resource served from a CRD object, or says why the CRD is not acceptable.
pub fn from_crd(crd: &Value) -> Result<ResourceDef, ApiError> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invalid = |field: &str, msg: &str| {
        ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            vec![(field.to_string(), msg.to_string())],
        )
    };
    let spec = crd
        .get("spec")
        .ok_or_else(|| invalid("spec", "Required value"))?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if group.is_empty() {
        return Err(invalid("spec.group", "Required value"));
    }
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if plural.is_empty() {
        return Err(invalid("spec.names.plural", "Required value"));
    }
    if kind.is_empty() {
        return Err(invalid("spec.names.kind", "Required value"));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid(
            "metadata.name",
            &format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let scope = spec
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("Namespaced");
    let mut versions = Vec::new();
    for v in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let vname = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let sub = v.get("subresources");
        let scale = sub.and_then(|s| s.get("scale")).map(|s| ScaleSpec {
            spec_replicas_path: s
                .get("specReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".spec.replicas")
                .into(),
            status_replicas_path: s
                .get("statusReplicasPath")
                .and_then(Value::as_str)
                .unwrap_or(".status.replicas")
                .into(),
            label_selector_path: s
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(String::from),
        });
        let printer_columns = v
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                type_: c
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .into(),
                json_path: c
                    .get("jsonPath")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
            })
            .collect();
        versions.push(VersionDef {
            name: vname,
            served: v.get("served").and_then(Value::as_bool).unwrap_or(true),
            storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
            schema: v.pointer("/schema/openAPIV3Schema").cloned(),
            status_subresource: sub.and_then(|s| s.get("status")).is_some(),
            scale,
            printer_columns,
            schema_id: SCHEMA_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
    }
    if versions.is_empty() {
        return Err(invalid(
            "spec.versions",
            "Required value: must have exactly one version marked as storage version",
        ));
    }
    if versions.iter().filter(|v| v.storage).count() != 1 {
        return Err(invalid(
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    Ok(ResourceDef {
        group: group.to_string(),
        plural: plural.to_string(),
        singular: names
            .get("singular")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase()),
        kind: kind.to_string(),
        list_kind: names
            .get("listKind")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| format!("{kind}List")),
        namespaced: scope != "Cluster",
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        versions,
        has_generation: true,
        typed_check: None,
        custom: true,
    })
}
