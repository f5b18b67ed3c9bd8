//! The published schemas of the test cluster and what is derived from them: the `/openapi/v2` and
//! `/openapi/v3` documents (read by `kubectl explain` and by kubectl's check that the server
//! validates fields itself), and the unknown-field checks of `fieldValidation`.
//!
//! Built-in kinds are described by k8s-openapi's schemas (generated from the same Go types as the
//! real server's), custom resources by their CRD version's `openAPIV3Schema`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::ResourceDef;

const REF_PREFIX: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// A built-in kind and the name of its schema among the definitions.
struct BuiltinKind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    definition: String,
}

/// The schemas of every built-in kind the server serves, with everything they reference.
struct Catalog {
    definitions: Map<String, Value>,
    kinds: Vec<BuiltinKind>,
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build_catalog)
}

fn build_catalog() -> Catalog {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coordination, core::v1 as core};
    use k8s_openapi::api::{
        discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;

    fn add<T: JsonSchema>(
        generator: &mut SchemaGenerator,
        kinds: &mut Vec<BuiltinKind>,
        group: &'static str,
        kind: &'static str,
    ) {
        generator.subschema_for::<T>();
        kinds.push(BuiltinKind {
            group,
            version: "v1",
            kind,
            definition: T::schema_name().into_owned(),
        });
    }
    // OpenAPI 3 settings put a `$ref` with a description into an `allOf`, as the real documents do.
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    let g = &mut generator;
    let k = &mut kinds;
    add::<core::Namespace>(g, k, "", "Namespace");
    add::<core::Pod>(g, k, "", "Pod");
    add::<core::Service>(g, k, "", "Service");
    add::<core::Endpoints>(g, k, "", "Endpoints");
    add::<core::Secret>(g, k, "", "Secret");
    add::<core::ConfigMap>(g, k, "", "ConfigMap");
    add::<core::Event>(g, k, "", "Event");
    add::<core::ServiceAccount>(g, k, "", "ServiceAccount");
    add::<apps::Deployment>(g, k, "apps", "Deployment");
    add::<apps::ReplicaSet>(g, k, "apps", "ReplicaSet");
    add::<k8s_openapi::api::batch::v1::Job>(g, k, "batch", "Job");
    add::<networking::Ingress>(g, k, "networking.k8s.io", "Ingress");
    add::<coordination::Lease>(g, k, "coordination.k8s.io", "Lease");
    add::<events::Event>(g, k, "events.k8s.io", "Event");
    add::<discovery::EndpointSlice>(g, k, "discovery.k8s.io", "EndpointSlice");
    add::<apiextensions::CustomResourceDefinition>(
        g,
        k,
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
    );
    add::<k8s_openapi::api::autoscaling::v1::Scale>(g, k, "autoscaling", "Scale");
    let mut definitions = generator.take_definitions(true);
    for kind in &kinds {
        if let Some(Value::Object(def)) = definitions.get_mut(&kind.definition) {
            def.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": kind.group, "kind": kind.kind, "version": kind.version}]),
            );
        }
    }
    definitions.insert(
        PATCH.into(),
        json!({"description": "The body of a PATCH request; its form depends on the Content-Type (JSON patch, merge patch, strategic merge patch or apply configuration).", "type": "object"}),
    );
    Catalog { definitions, kinds }
}

fn builtin_definition(group: &str, kind: &str) -> Option<&'static str> {
    catalog()
        .kinds
        .iter()
        .find(|k| k.group == group && k.kind == kind && k.kind != "Scale")
        .map(|k| k.definition.as_str())
}

/// Follows `$ref`s (and a lone `allOf` around one) to the schema that describes a value.
fn resolve<'a>(mut node: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    for _ in 0..64 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            match defs.get(r.strip_prefix(REF_PREFIX).unwrap_or(r)) {
                Some(def) => {
                    node = def;
                    continue;
                }
                None => return node,
            }
        }
        if node.get("properties").is_none()
            && let Some([only]) = node
                .get("allOf")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
        {
            node = only;
            continue;
        }
        break;
    }
    node
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// How unknown field paths are spelled: by the request decoder (`spec.containers[0].imagee`) or by
/// server-side apply's typed conversion (`.spec.containers[name="web"].imagee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathStyle {
    Decoder,
    Apply,
}

/// One pass over a value against its schema, collecting (and optionally removing) unknown fields.
struct UnknownFields<'a> {
    defs: &'a Map<String, Value>,
    style: PathStyle,
    remove: bool,
    /// CRD schemas prune an object schema without properties; built-in free-form objects
    /// (`FieldsV1`, `RawExtension`, JSON values) keep everything.
    structural: bool,
    found: Vec<String>,
}

impl UnknownFields<'_> {
    fn child(&self, path: &str, key: &str) -> String {
        match self.style {
            PathStyle::Decoder if path.is_empty() => key.to_string(),
            PathStyle::Decoder => format!("{path}.{key}"),
            PathStyle::Apply => format!("{path}.{key}"),
        }
    }

    fn walk(&mut self, schema: &Value, value: &mut Value, path: &str, embedded_root: bool) {
        let schema = resolve(schema, self.defs);
        match value {
            Value::Object(map) => {
                let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
                let embedded = embedded_root || flag(schema, "x-kubernetes-embedded-resource");
                let props = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties");
                let free_form = !self.structural && props.is_none() && additional.is_none();
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let path = self.child(path, &key);
                    if embedded && matches!(key.as_str(), "apiVersion" | "kind") {
                        continue;
                    }
                    if embedded && key == "metadata" && props.is_none_or(|p| !p.contains_key(&key))
                    {
                        if embedded_root && let Some(meta) = map.get_mut(&key) {
                            let mut inner = UnknownFields {
                                defs: &catalog().definitions,
                                style: self.style,
                                remove: self.remove,
                                structural: false,
                                found: Vec::new(),
                            };
                            let meta_schema = json!({"$ref": format!("{REF_PREFIX}{OBJECT_META}")});
                            inner.walk(&meta_schema, meta, &path, false);
                            self.found.append(&mut inner.found);
                        }
                        continue;
                    }
                    let sub = props
                        .and_then(|p| p.get(&key))
                        .or(additional.filter(|a| a.is_object()));
                    match sub {
                        Some(sub) => {
                            if let Some(child) = map.get_mut(&key)
                                && !child.is_null()
                            {
                                self.walk(sub, child, &path, false);
                            }
                        }
                        None if preserve || free_form || additional == Some(&Value::Bool(true)) => {
                        }
                        None => {
                            self.found.push(path);
                            if self.remove {
                                map.remove(&key);
                            }
                        }
                    }
                }
            }
            Value::Array(items) => {
                let Some(item_schema) = schema.get("items") else {
                    return;
                };
                let field = path.rsplit('.').next().unwrap_or_default().to_string();
                for (i, item) in items.iter_mut().enumerate() {
                    let element = match self.style {
                        PathStyle::Decoder => format!("[{i}]"),
                        PathStyle::Apply => {
                            apply_list_element(schema, &field, item, i, !self.structural)
                        }
                    };
                    self.walk(item_schema, item, &format!("{path}{element}"), false);
                }
            }
            _ => {}
        }
    }
}

/// How server-side apply names a list element: by its keys in an associative list
/// (`[name="web"]`), by value in a set, by index in an atomic list.
fn apply_list_element(
    schema: &Value,
    field: &str,
    item: &Value,
    index: usize,
    builtin: bool,
) -> String {
    let render = |v: &Value| match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    let keys: Vec<&str> = if builtin {
        // k8s-openapi's schemas carry no list-type markers; these are the keys the Go types
        // declare for the associative lists of the served kinds.
        match field {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "env"
            | "volumes"
            | "imagePullSecrets" => vec!["name"],
            "volumeMounts" => vec!["mountPath"],
            "ports" if item.get("containerPort").is_some() => vec!["containerPort", "protocol"],
            "ports" => vec!["port", "protocol"],
            "conditions" => vec!["type"],
            "ownerReferences" => vec!["uid"],
            _ => Vec::new(),
        }
    } else {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
            Some("set") if !item.is_object() => return format!("[={}]", render(item)),
            _ => Vec::new(),
        }
    };
    if keys.is_empty() || !item.is_object() {
        return format!("[{index}]");
    }
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            let v = match item.get(*k) {
                Some(v) => render(v),
                // The protocol of a port defaults to TCP before apply keys the list.
                None if *k == "protocol" => "\"TCP\"".to_string(),
                None => "null".to_string(),
            };
            format!("{k}={v}")
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// Unknown fields of a built-in object, by its published schema, removed from `obj`; paths as the
/// request decoder reports them (`spec.template.spec.containers[0].imagee`). `None` for a kind
/// without a published schema.
pub fn prune_builtin(group: &str, kind: &str, obj: &mut Value) -> Option<Vec<String>> {
    let catalog = catalog();
    let def = builtin_definition(group, kind)?;
    let mut walker = UnknownFields {
        defs: &catalog.definitions,
        style: PathStyle::Decoder,
        remove: true,
        structural: false,
        found: Vec::new(),
    };
    walker.walk(
        &json!({"$ref": format!("{REF_PREFIX}{def}")}),
        obj,
        "",
        false,
    );
    Some(walker.found)
}

/// Unknown fields of a custom resource's `metadata`, removed from `obj` (the schema pruning of
/// the CRD never looks into `metadata`).
pub fn prune_metadata(obj: &mut Value) -> Vec<String> {
    let Some(meta) = obj.get_mut("metadata") else {
        return Vec::new();
    };
    let mut walker = UnknownFields {
        defs: &catalog().definitions,
        style: PathStyle::Decoder,
        remove: true,
        structural: false,
        found: Vec::new(),
    };
    walker.walk(
        &json!({"$ref": format!("{REF_PREFIX}{OBJECT_META}")}),
        meta,
        "metadata",
        false,
    );
    walker.found
}

/// Fields of an applied configuration that the kind's schema does not declare, as server-side
/// apply's typed conversion names them (`.spec.foo`). Apply refuses these whatever the
/// `fieldValidation`.
pub fn undeclared_in_apply(res: &ResourceDef, version: &str, applied: &Value) -> Vec<String> {
    let mut value = applied.clone();
    if res.custom {
        let Some(schema) = res.version(version).and_then(|v| v.schema.as_ref()) else {
            return Vec::new();
        };
        let mut walker = UnknownFields {
            defs: &catalog().definitions,
            style: PathStyle::Apply,
            remove: false,
            structural: true,
            found: Vec::new(),
        };
        walker.walk(schema, &mut value, "", true);
        walker.found
    } else {
        let Some(def) = builtin_definition(&res.group, &res.kind) else {
            return Vec::new();
        };
        let mut walker = UnknownFields {
            defs: &catalog().definitions,
            style: PathStyle::Apply,
            remove: false,
            structural: false,
            found: Vec::new(),
        };
        walker.walk(
            &json!({"$ref": format!("{REF_PREFIX}{def}")}),
            &mut value,
            "",
            false,
        );
        walker.found
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

/// `io.k8s.api.apps.v1` style name of a custom resource's schema: the group reversed.
fn crd_definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// A CRD version's schema as published: `metadata` refers to `ObjectMeta`, and the schema names
/// its kind.
fn crd_schema(res: &ResourceDef, version: &str, schema: Option<&Value>) -> Value {
    let mut schema = schema
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(map) = schema.as_object_mut() {
        let props = map
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(props) = props {
            props.insert(
                "apiVersion".into(),
                json!({"description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources", "type": "string"}),
            );
            props.insert(
                "kind".into(),
                json!({"description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds", "type": "string"}),
            );
            props.insert(
                "metadata".into(),
                json!({"allOf": [{"$ref": format!("{REF_PREFIX}{OBJECT_META}")}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
            );
        }
        map.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": res.group, "kind": res.kind, "version": version}]),
        );
    }
    schema
}

/// Collects the names of every definition reachable from `value`.
fn referenced(value: &Value, defs: &Map<String, Value>, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(name) = v.as_str().and_then(|r| r.strip_prefix(REF_PREFIX))
                {
                    if out.insert(name.to_string())
                        && let Some(def) = defs.get(name)
                    {
                        referenced(def, defs, out);
                    }
                } else {
                    referenced(v, defs, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| referenced(i, defs, out)),
        _ => {}
    }
}

fn camel(s: &str) -> String {
    s.split(['.', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn query_param(name: &str, description: &str, v2: bool) -> Value {
    let mut p =
        json!({"name": name, "in": "query", "description": description, "uniqueItems": true});
    if v2 {
        p["type"] = json!("string");
    } else {
        p["schema"] = json!({"type": "string", "uniqueItems": true});
    }
    p
}

fn write_params(v2: bool, patch: bool) -> Vec<Value> {
    let mut params = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values: All (process every stage without persisting).",
            v2,
        ),
        query_param(
            "fieldManager",
            "The name of the actor or entity making these changes, recorded in managedFields.",
            v2,
        ),
        query_param(
            "fieldValidation",
            "How the server treats unknown and duplicate fields in the request body. Ignore: drop them silently. Warn (the default): drop them and send one Warning header per field. Strict: refuse the request with a BadRequest error naming the fields.",
            v2,
        ),
    ];
    if patch {
        params.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests: take the conflicting fields from their other managers. Must be unset for non-apply patch requests.",
            v2,
        ));
    }
    params
}

fn path_param(name: &str, description: &str, v2: bool) -> Value {
    let mut p = json!({"name": name, "in": "path", "required": true, "description": description, "uniqueItems": true});
    if v2 {
        p["type"] = json!("string");
    } else {
        p["schema"] = json!({"type": "string", "uniqueItems": true});
    }
    p
}

/// One operation of a path, in OpenAPI v3 or Swagger 2.0 form.
struct OpSpec<'a> {
    method: &'a str,
    action: &'a str,
    id: String,
    gvk: Value,
    schema_ref: &'a str,
    body: Option<&'a str>,
    list: bool,
}

fn operation(op: &OpSpec, v2: bool, patch_types: &[&str]) -> Value {
    let schema = if op.list {
        json!({"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": op.schema_ref}}}})
    } else {
        json!({"$ref": op.schema_ref})
    };
    let mut params: Vec<Value> = match op.method {
        "post" | "put" => write_params(v2, false),
        "patch" => write_params(v2, true),
        "delete" => vec![
            query_param(
                "dryRun",
                "When present, indicates that modifications should not be persisted.",
                v2,
            ),
            query_param(
                "propagationPolicy",
                "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
                v2,
            ),
        ],
        _ if op.list => vec![
            query_param(
                "labelSelector",
                "A selector to restrict the list of returned objects by their labels.",
                v2,
            ),
            query_param(
                "fieldSelector",
                "A selector to restrict the list of returned objects by their fields.",
                v2,
            ),
            query_param(
                "limit",
                "The maximum number of responses to return for a list call.",
                v2,
            ),
            query_param(
                "continue",
                "The continue token of the previous page of a list call.",
                v2,
            ),
            query_param(
                "resourceVersion",
                "Which resource versions the request may be served from.",
                v2,
            ),
            query_param(
                "watch",
                "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
                v2,
            ),
        ],
        _ => Vec::new(),
    };
    let mut ok = json!({"description": "OK"});
    let mut created = json!({"description": "Created"});
    if v2 {
        ok["schema"] = schema.clone();
        created["schema"] = schema.clone();
    } else {
        let content =
            json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}});
        ok["content"] = content.clone();
        created["content"] = content;
    }
    let mut responses = json!({"200": ok, "401": {"description": "Unauthorized"}});
    if matches!(op.method, "post" | "put" | "patch") {
        responses["201"] = created;
    }
    let mut out = json!({
        "description": format!("{} the {}", op.action, op.gvk["kind"].as_str().unwrap_or_default()),
        "operationId": op.id,
        "tags": [op.gvk["group"].as_str().filter(|g| !g.is_empty()).map(camel).unwrap_or_else(|| "core".into())],
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    });
    if let Some(body_ref) = op.body {
        let types: Vec<&str> = if op.method == "patch" {
            patch_types.to_vec()
        } else {
            vec!["application/json", "application/yaml"]
        };
        if v2 {
            params.push(json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": body_ref}}));
            out["consumes"] = json!(types);
        } else {
            let content: Map<String, Value> = types
                .iter()
                .map(|t| (t.to_string(), json!({"schema": {"$ref": body_ref}})))
                .collect();
            out["requestBody"] = json!({"content": content, "required": true});
        }
    }
    if v2 {
        out["produces"] = json!(["application/json", "application/yaml"]);
        out["schemes"] = json!(["https"]);
    }
    out["parameters"] = json!(params);
    out
}

/// The paths of one resource at one version.
fn resource_paths(
    res: &ResourceDef,
    version: &str,
    definition: &str,
    v2: bool,
    paths: &mut Map<String, Value>,
) {
    let refs = if v2 { "#/definitions/" } else { REF_PREFIX };
    let schema_ref = format!("{refs}{definition}");
    let patch_ref = format!("{refs}{PATCH}");
    let scale_ref = format!("{refs}{SCALE}");
    let prefix = if res.group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{}/{version}", res.group)
    };
    let gvk = json!({"group": res.group, "kind": res.kind, "version": version});
    let id_part = format!(
        "{}{}",
        if res.group.is_empty() {
            "Core".to_string()
        } else {
            camel(res.group.trim_end_matches(".k8s.io"))
        },
        camel(version)
    );
    let scope = if res.namespaced { "Namespaced" } else { "" };
    // The built-in kinds' patch types leave out strategic merge patch: kubectl computes such a
    // patch from the published schema only when it is listed, and these schemas lack the merge
    // keys, so kubectl is kept on its compiled-in Go types for that.
    let patch_types: &[&str] = &[
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let name_param = path_param("name", &format!("name of the {}", res.kind), v2);
    let ns_param = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
        v2,
    );
    let collection = if res.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", res.plural)
    } else {
        format!("{prefix}/{}", res.plural)
    };
    let mut common = Vec::new();
    if res.namespaced {
        common.push(ns_param);
    }
    let spec = |method: &'static str, action: &'static str, id: String, body: bool, list: bool| {
        (
            method,
            OpSpec {
                method,
                action,
                id,
                gvk: gvk.clone(),
                schema_ref: "",
                body: None,
                list,
            },
            body,
        )
    };
    let mut add_path = |path: String,
                        ops: Vec<(&str, OpSpec, bool)>,
                        params: Vec<Value>,
                        schema_ref: &str,
                        op_gvk: Option<Value>| {
        let mut item = Map::new();
        for (method, mut op, body) in ops {
            op.schema_ref = schema_ref;
            if let Some(g) = &op_gvk {
                op.gvk = g.clone();
            }
            let body_ref = if method == "patch" {
                patch_ref.as_str()
            } else {
                schema_ref
            };
            op.body = body.then_some(body_ref);
            item.insert(method.to_string(), operation(&op, v2, patch_types));
        }
        item.insert("parameters".into(), json!(params));
        paths.insert(path, Value::Object(item));
    };
    let kind = &res.kind;
    add_path(
        collection.clone(),
        vec![
            spec(
                "get",
                "list",
                format!("list{id_part}{scope}{kind}"),
                false,
                true,
            ),
            spec(
                "post",
                "post",
                format!("create{id_part}{scope}{kind}"),
                true,
                false,
            ),
        ],
        common.clone(),
        &schema_ref,
        None,
    );
    let mut item_params = common.clone();
    item_params.insert(0, name_param);
    add_path(
        format!("{collection}/{{name}}"),
        vec![
            spec(
                "get",
                "get",
                format!("read{id_part}{scope}{kind}"),
                false,
                false,
            ),
            spec(
                "put",
                "put",
                format!("replace{id_part}{scope}{kind}"),
                true,
                false,
            ),
            spec(
                "patch",
                "patch",
                format!("patch{id_part}{scope}{kind}"),
                true,
                false,
            ),
            spec(
                "delete",
                "delete",
                format!("delete{id_part}{scope}{kind}"),
                false,
                false,
            ),
        ],
        item_params.clone(),
        &schema_ref,
        None,
    );
    if res.has_status(version) {
        add_path(
            format!("{collection}/{{name}}/status"),
            vec![
                spec(
                    "get",
                    "get",
                    format!("read{id_part}{scope}{kind}Status"),
                    false,
                    false,
                ),
                spec(
                    "put",
                    "put",
                    format!("replace{id_part}{scope}{kind}Status"),
                    true,
                    false,
                ),
                spec(
                    "patch",
                    "patch",
                    format!("patch{id_part}{scope}{kind}Status"),
                    true,
                    false,
                ),
            ],
            item_params.clone(),
            &schema_ref,
            None,
        );
    }
    if res.scale(version).is_some() {
        add_path(
            format!("{collection}/{{name}}/scale"),
            vec![
                spec(
                    "get",
                    "get",
                    format!("read{id_part}{scope}{kind}Scale"),
                    false,
                    false,
                ),
                spec(
                    "put",
                    "put",
                    format!("replace{id_part}{scope}{kind}Scale"),
                    true,
                    false,
                ),
                spec(
                    "patch",
                    "patch",
                    format!("patch{id_part}{scope}{kind}Scale"),
                    true,
                    false,
                ),
            ],
            item_params,
            &scale_ref,
            Some(json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})),
        );
    }
    if res.namespaced {
        add_path(
            format!("{prefix}/{}", res.plural),
            vec![spec(
                "get",
                "list",
                format!("list{id_part}{kind}ForAllNamespaces"),
                false,
                true,
            )],
            Vec::new(),
            &schema_ref,
            None,
        );
    }
}

/// The schemas one group-version publishes, keyed by definition name, and its paths.
struct GroupVersion {
    definitions: Map<String, Value>,
    roots: BTreeSet<String>,
    resources: Vec<(Arc<ResourceDef>, String, String)>,
}

/// Every served group-version (`api/v1`, `apis/apps/v1`, ...) with what it publishes.
fn group_versions(resources: &[Arc<ResourceDef>]) -> BTreeMap<String, GroupVersion> {
    let catalog = catalog();
    let mut out: BTreeMap<String, GroupVersion> = BTreeMap::new();
    for res in resources {
        for v in res.versions.iter().filter(|v| v.served) {
            let key = if res.group.is_empty() {
                format!("api/{}", v.name)
            } else {
                format!("apis/{}/{}", res.group, v.name)
            };
            let gv = out.entry(key).or_insert_with(|| GroupVersion {
                definitions: Map::new(),
                roots: BTreeSet::new(),
                resources: Vec::new(),
            });
            let definition = if res.custom {
                let name = crd_definition_name(&res.group, &v.name, &res.kind);
                gv.definitions
                    .insert(name.clone(), crd_schema(res, &v.name, v.schema.as_ref()));
                gv.roots.insert(OBJECT_META.to_string());
                name
            } else {
                match builtin_definition(&res.group, &res.kind) {
                    Some(name) => name.to_string(),
                    None => continue,
                }
            };
            gv.roots.insert(definition.clone());
            gv.roots.insert(PATCH.to_string());
            if v.scale.is_some() {
                gv.roots.insert(SCALE.to_string());
            }
            gv.resources
                .push((res.clone(), v.name.clone(), definition.clone()));
        }
    }
    for gv in out.values_mut() {
        let mut names = BTreeSet::new();
        for root in &gv.roots {
            names.insert(root.clone());
            let node = gv
                .definitions
                .get(root)
                .or_else(|| catalog.definitions.get(root));
            if let Some(node) = node {
                referenced(node, &catalog.definitions, &mut names);
            }
        }
        for name in names {
            if !gv.definitions.contains_key(&name)
                && let Some(def) = catalog.definitions.get(&name)
            {
                gv.definitions.insert(name, def.clone());
            }
        }
    }
    out
}

fn v3_document(gv: &GroupVersion) -> Value {
    let mut paths = Map::new();
    for (res, version, definition) in &gv.resources {
        resource_paths(res, version, definition, false, &mut paths);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": gv.definitions},
    })
}

fn v2_document(gvs: &BTreeMap<String, GroupVersion>) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for gv in gvs.values() {
        for (res, version, definition) in &gv.resources {
            resource_paths(res, version, definition, true, &mut paths);
        }
        for (k, v) in &gv.definitions {
            definitions.insert(k.clone(), v.clone());
        }
    }
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
    });
    // Swagger 2.0 keeps its schemas under `definitions`.
    let text = doc.to_string().replace(REF_PREFIX, "#/definitions/");
    serde_json::from_str(&text).unwrap_or(doc)
}

/// A stable content hash (two FNV-1a passes), upper-case hex like the real server's.
fn content_hash(bytes: &[u8]) -> String {
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|t| {
        let t = t.split(';').next().unwrap_or_default().trim();
        t.is_empty() || t == "*/*" || t == "application/*" || t.contains("json")
    })
}

fn not_acceptable() -> Response {
    ApiError::new(
        406,
        "NotAcceptable",
        "only the following media types are accepted: application/json",
    )
    .into_response()
}

fn json_body(code: StatusCode, body: String, cache: Option<&str>) -> Response {
    let mut response = (code, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let cache_control = if cache.is_some() {
        "public, immutable"
    } else {
        "no-cache, private"
    };
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    if let Some(etag) = cache.and_then(|e| HeaderValue::from_str(&format!("\"{e}\"")).ok()) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// Serves `/openapi/v2`, `/openapi/v3` and `/openapi/v3/<group-version>`.
pub fn serve(
    resources: &[Arc<ResourceDef>],
    path: &str,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .into_response()
    };
    let path = path.trim_matches('/');
    let gvs = group_versions(resources);
    if path == "openapi/v2" {
        // Protobuf, which kubectl asks for first, is not spoken here: kubectl then goes on
        // without this document (its patches fall back to its compiled-in types).
        if !accepts_json(headers) {
            return not_acceptable();
        }
        return json_body(StatusCode::OK, v2_document(&gvs).to_string(), None);
    }
    if !accepts_json(headers) {
        return not_acceptable();
    }
    if path == "openapi/v3" {
        let paths: Map<String, Value> = gvs
            .iter()
            .map(|(key, gv)| {
                let hash = content_hash(v3_document(gv).to_string().as_bytes());
                (
                    key.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
                )
            })
            .collect();
        return json_body(StatusCode::OK, json!({"paths": paths}).to_string(), None);
    }
    let Some(key) = path.strip_prefix("openapi/v3/") else {
        return not_found();
    };
    let Some(gv) = gvs.get(key) else {
        return not_found();
    };
    let body = v3_document(gv).to_string();
    let hash = content_hash(body.as_bytes());
    match query.get("hash") {
        // A stale hash is redirected to the current document, as the real server does.
        Some(asked) if *asked != hash => {
            let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("/openapi/v3/{key}?hash={hash}")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Some(_) => json_body(StatusCode::OK, body, Some(&hash)),
        None => json_body(StatusCode::OK, body, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_unknown_fields_are_named_by_full_path_and_removed() {
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labelz": {"a": "b"}, "labels": {"any": "key"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx", "imagee": "x",
                        "ports": [{"containerPort": 80, "bogus": true}]}]}}},
        });
        let found = prune_builtin("apps", "Deployment", &mut obj).expect("a built-in kind");
        assert_eq!(
            found,
            vec![
                "metadata.labelz",
                "spec.template.spec.containers[0].imagee",
                "spec.template.spec.containers[0].ports[0].bogus",
            ]
        );
        assert!(obj.pointer("/metadata/labelz").is_none());
        assert!(
            obj.pointer("/spec/template/spec/containers/0/imagee")
                .is_none()
        );
        assert_eq!(obj.pointer("/metadata/labels/any"), Some(&json!("key")));
    }

    #[test]
    fn free_form_built_in_fields_keep_everything() {
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a",
            "managedFields": [{"manager": "m", "fieldsV1": {"f:data": {"f:x": {}}}}]},
            "data": {"anything": "goes"}});
        assert_eq!(
            prune_builtin("", "ConfigMap", &mut obj),
            Some(Vec::<String>::new())
        );
    }

    #[test]
    fn apply_paths_name_list_elements_by_key() {
        let res = crate::resources::builtins()
            .into_iter()
            .find(|r| r.plural == "deployments")
            .expect("deployments are built in");
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "imagee": "x"}]}}, "foo": 1}});
        assert_eq!(
            undeclared_in_apply(&res, "v1", &applied),
            vec![
                ".spec.foo",
                ".spec.template.spec.containers[name=\"web\"].imagee"
            ]
        );
    }

    #[test]
    fn crd_documents_carry_the_kind_and_the_field_validation_parameter() {
        let crd = crate::cluster::example_crd();
        let res = Arc::new(crate::resources::from_crd(&crd).expect("a valid crd"));
        let gvs = group_versions(std::slice::from_ref(&res));
        let key = format!("apis/{}/v1", res.group);
        let doc = v3_document(gvs.get(&key).expect("the crd's group-version"));
        let name = crd_definition_name(&res.group, "v1", &res.kind);
        assert_eq!(
            doc.pointer(&format!(
                "/components/schemas/{name}/x-kubernetes-group-version-kind/0/kind"
            )),
            Some(&json!(res.kind))
        );
        assert!(
            doc.pointer(&format!("/components/schemas/{OBJECT_META}"))
                .is_some()
        );
        let patch = doc
            .pointer(&format!(
                "/paths/~1apis~1{}~1v1~1namespaces~1{{namespace}}~1{}~1{{name}}/patch",
                res.group, res.plural
            ))
            .expect("a patch operation");
        assert!(
            patch["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
    }
}
