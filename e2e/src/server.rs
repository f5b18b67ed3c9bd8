//! The HTTP front of the test cluster: routing of Kubernetes API paths, verbs, watch streams,
//! discovery, `kubectl` tables, faults and the write log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::controls::{Controls, FaultAction, RequestInfo, WriteRecord};
use crate::discovery;
use crate::error::ApiError;
use crate::patch::PatchType;
use crate::resources::ResourceDef;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, EventType, FieldValidation, Store, StoreEvent, WriteCtx};

const PATCH_TYPES: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// State shared by all requests.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub controls: Arc<Controls>,
    /// Bumped to end every open watch.
    pub watch_epoch: Arc<watch::Sender<u64>>,
    pub settings: ServerSettings,
    pub address: String,
}

pub fn router(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn json_response(code: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let mut response = (code, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        if let Ok(v) = HeaderValue::from_bytes(warning_header(w).as_bytes()) {
            headers.append(header::WARNING, v);
        }
    }
    response
}

/// A `Warning` header value as kube-apiserver writes it: code 299, no agent, the text quoted with
/// only `"` and `\` escaped.
fn warning_header(text: &str) -> String {
    let mut out = String::from("299 - \"");
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Decodes an `application/x-www-form-urlencoded` query string.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// A resource request, parsed from its path.
struct Target {
    res: Arc<ResourceDef>,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_target(store: &Store, path: &str) -> Option<Result<Target, ApiError>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    let core = group.is_empty();
    let (namespace, plural, name, sub) = if rest[0] == "namespaces"
        && rest.len() >= 3
        && !(core && rest.len() == 3 && matches!(rest[2], "status" | "finalize"))
    {
        (
            Some(rest[1]),
            rest[2],
            rest.get(3).copied(),
            rest.get(4).copied(),
        )
    } else {
        (None, rest[0], rest.get(1).copied(), rest.get(2).copied())
    };
    let not_found = || {
        Some(Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )))
    };
    let Some(res) = store.resource(group, plural) else {
        return not_found();
    };
    if res.version(version).is_none() {
        return not_found();
    }
    if namespace.is_some() && !res.namespaced {
        return not_found();
    }
    if let Some(sub) = sub
        && !(sub == "status" && res.has_status(version)
            || sub == "scale" && res.scale(version).is_some()
            || sub == "finalize" && res.plural == "namespaces"
            || sub == "eviction" && res.group.is_empty() && res.plural == "pods")
    {
        return not_found();
    }
    Some(Ok(Target {
        version: version.to_string(),
        res,
        namespace: namespace.map(String::from),
        name: name.map(String::from),
        subresource: sub.map(String::from),
    }))
}

fn identity(headers: &HeaderMap) -> Option<String> {
    if let Some(user) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
    {
        return Some(user.to_string());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(String::from)
}

fn parse_body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).or_else(|_| {
        serde_yaml::from_slice::<Value>(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
    })
}

async fn handle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = parse_query(uri.query().unwrap_or_default());
    if let Some(response) = discovery::serve(&state, &method, &path, &query, &headers) {
        return response;
    }
    let target = match parse_target(&state.store, &path) {
        None => {
            return ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
            .into_response();
        }
        Some(Err(e)) => return e.into_response(),
        Some(Ok(t)) => t,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut body = body;
    let protobuf = content_type.starts_with("application/vnd.kubernetes.protobuf");
    if !body.is_empty() && (protobuf || content_type.starts_with("application/cbor")) {
        // JSON (and YAML for apply) is spoken here, plus the protobuf of the few kinds that
        // kubectl's generator commands send.
        match protobuf.then(|| crate::protobuf::decode(&body)) {
            Some(Ok(decoded)) => body = Bytes::from(decoded.to_string()),
            other => {
                let accepted = if method == Method::PATCH {
                    PATCH_TYPES
                } else {
                    "application/json, application/yaml"
                };
                let mut e = ApiError::unsupported_media_type(content_type, accepted);
                if let Some(Err(why)) = other {
                    e.message = format!("{}: {why}", e.message);
                }
                return e.into_response();
            }
        }
    }
    let is_watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match (&method, target.name.is_some()) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if is_watch => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        // The one subresource created by POST on a named object (verb `create` of
        // `pods/eviction`, as RBAC sees it).
        (&Method::POST, true) if target.subresource.as_deref() == Some("eviction") => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            return ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            ))
            .into_response();
        }
    };
    let info = RequestInfo {
        verb: verb.to_string(),
        group: target.res.group.clone(),
        version: target.version.clone(),
        resource: target.res.plural.clone(),
        subresource: target.subresource.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        identity: identity(&headers),
    };
    state.controls.count(format!("{verb} {}", info.resource));
    let fault = state.controls.take_fault(&info);
    if let Some(FaultAction::Hang(d)) = &fault {
        tokio::time::sleep(*d).await;
    }
    let response = match fault {
        Some(FaultAction::Fail(code)) => {
            let mut e = ApiError::from_code(
                code,
                format!("injected fault: {verb} {}", target.res.qualified()),
            );
            if code == 409 {
                e = ApiError::conflict(
                    &target.res.qualified(),
                    target.name.as_deref().unwrap_or_default(),
                );
            }
            e.into_response()
        }
        _ => serve(&state, &target, verb, &query, &headers, &body).await,
    };
    // What the store did is recorded below; what the client sees is the fault.
    let (code, response) = match fault {
        Some(FaultAction::TimeoutAfterCommit) => (
            response.status().as_u16(),
            ApiError::from_code(
                504,
                "Timeout: request did not complete within the allotted timeout".to_string(),
            )
            .into_response(),
        ),
        Some(FaultAction::ResetAfterCommit) => {
            let code = response.status().as_u16();
            let (parts, _) = response.into_parts();
            let broken = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected fault: connection reset after the write was committed",
                ))
            });
            (code, Response::from_parts(parts, Body::from_stream(broken)))
        }
        _ => (response.status().as_u16(), response),
    };
    if matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) {
        state.controls.record(WriteRecord {
            seq: 0,
            method: method.to_string(),
            uri: uri.to_string(),
            verb: verb.to_string(),
            group: info.group,
            resource: info.resource,
            subresource: info.subresource,
            namespace: info.namespace,
            name: info.name,
            field_manager: query.get("fieldManager").cloned(),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            identity: info.identity,
            code,
            body: parse_body(&body).ok().filter(|b| !b.is_null()),
        });
    }
    response
}

fn write_ctx(query: &HashMap<String, String>, headers: &HeaderMap, apply: bool) -> WriteCtx {
    let manager = query.get("fieldManager").cloned().or_else(|| {
        // The real server names an unnamed manager after the user agent's program name.
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
            .or(Some("unknown".into()))
            .filter(|_| !apply)
    });
    WriteCtx {
        field_manager: manager,
        field_validation: match query.get("fieldValidation").map(String::as_str) {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        },
        body_form: Default::default(),
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        force: query.get("force").is_some_and(|f| f == "true"),
        apply,
    }
}

/// Sets the apiVersion an object is served at (CRD versions share storage, `None` conversion);
/// stored Events are converted to the events.k8s.io/v1 shape for that API.
fn at_version(obj: &Value, res: &ResourceDef, version: &str) -> Value {
    if crate::events::is_events_api(res) {
        return crate::events::to_events_v1(obj);
    }
    let mut obj = obj.clone();
    obj["apiVersion"] = json!(res.api_version(version));
    obj["kind"] = json!(res.kind);
    obj
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

async fn serve(
    state: &AppState,
    t: &Target,
    verb: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    match serve_inner(state, t, verb, query, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(
    state: &AppState,
    t: &Target,
    verb: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let store = &state.store;
    let res = &t.res;
    let event_query = crate::events::storage_query(res, query)?;
    let query = event_query.as_ref().unwrap_or(query);
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    if res.namespaced && t.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let sub = t.subresource.as_deref();
    match verb {
        "get" => {
            let obj = store
                .get(&res.key(), &ns, &name)
                .ok_or_else(|| ApiError::not_found(&res.qualified(), &name))?;
            if sub == Some("scale") {
                return Ok(json_response(
                    StatusCode::OK,
                    &scale_of(res, &t.version, &obj),
                    &[],
                ));
            }
            let obj = at_version(&obj, res, &t.version);
            if wants_table(headers) {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                return Ok(json_response(
                    StatusCode::OK,
                    &discovery::table(state, res, &t.version, &[obj], rv, query),
                    &[],
                ));
            }
            Ok(json_response(StatusCode::OK, &obj, &[]))
        }
        "list" => list(state, t, query, headers),
        "watch" => watch(state, t, query),
        "create" if sub == Some("eviction") => {
            let status = crate::eviction::evict(store, &ns, &name, &parse_body(body)?)?;
            Ok(json_response(StatusCode::CREATED, &status, &[]))
        }
        "create" => {
            let obj = parse_body(body)?;
            let ok = store.create(&write_ctx(query, headers, false), res, &t.version, &ns, obj)?;
            Ok(json_response(StatusCode::CREATED, &ok.object, &ok.warnings))
        }
        "update" => {
            let obj = parse_body(body)?;
            if sub == Some("scale") {
                let replicas = obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                let rv = obj.pointer("/metadata/resourceVersion").cloned();
                return write_scale(state, t, query, headers, replicas, rv);
            }
            let ok = store.update(
                &write_ctx(query, headers, false),
                res,
                &t.version,
                &ns,
                &name,
                obj,
                sub,
            )?;
            Ok(json_response(StatusCode::OK, &ok.object, &ok.warnings))
        }
        "patch" => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let patch_type = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type, PATCH_TYPES))?;
            let patch = parse_body(body)?;
            if sub == Some("scale") {
                let current = store
                    .get(&res.key(), &ns, &name)
                    .ok_or_else(|| ApiError::not_found(&res.qualified(), &name))?;
                let mut scale = scale_of(res, &t.version, &current);
                match patch_type {
                    PatchType::Json => crate::patch::json_patch(&mut scale, &patch)?,
                    _ => crate::patch::merge_patch(&mut scale, &patch),
                }
                let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                let rv = patch.pointer("/metadata/resourceVersion").cloned();
                return write_scale(state, t, query, headers, replicas, rv);
            }
            let ctx = write_ctx(query, headers, patch_type == PatchType::Apply);
            let ok = store.patch(&ctx, res, &t.version, &ns, &name, patch_type, &patch, sub)?;
            let code = if ok.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &ok.object, &ok.warnings))
        }
        "delete" => {
            let opts = delete_opts(query, body)?;
            let (obj, pending) = store.delete(res, &ns, &name, &opts)?;
            if pending || res.custom {
                let obj = if crate::events::is_events_api(res) {
                    at_version(&obj, res, &t.version)
                } else {
                    obj
                };
                return Ok(json_response(StatusCode::OK, &obj, &[]));
            }
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": res.group, "kind": res.plural, "uid": obj.pointer("/metadata/uid")}
            });
            Ok(json_response(StatusCode::OK, &status, &[]))
        }
        "deletecollection" => {
            let opts = delete_opts(query, body)?;
            let labels = LabelSelector::parse(
                query
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )?;
            let fields = FieldSelector::parse(
                query
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
                &res.kind,
            )?;
            let (items, _) = store.list(&res.key(), t.namespace.as_deref());
            let mut deleted = Vec::new();
            for obj in items
                .iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
            {
                let ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match store.delete(res, ns, name, &opts) {
                    Ok((obj, _)) => deleted.push(at_version(&obj, res, &t.version)),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            let list = json!({"apiVersion": res.api_version(&t.version), "kind": res.list_kind, "metadata": {"resourceVersion": store.current_rv().to_string()}, "items": deleted});
            Ok(json_response(StatusCode::OK, &list, &[]))
        }
        _ => Err(ApiError::method_not_allowed("unsupported verb")),
    }
}

fn delete_opts(query: &HashMap<String, String>, body: &Bytes) -> Result<DeleteOpts, ApiError> {
    let body = parse_body(body)?;
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(String::from);
    Ok(DeleteOpts {
        propagation: query
            .get("propagationPolicy")
            .cloned()
            .or_else(|| s(body.get("propagationPolicy"))),
        precondition_uid: s(body.pointer("/preconditions/uid")),
        precondition_rv: s(body.pointer("/preconditions/resourceVersion")),
        grace_period: query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64)),
        dry_run: query.get("dryRun").is_some_and(|d| d == "All")
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|d| d == "All")),
    })
}

fn json_path_pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |mut acc, seg| {
            acc.push('/');
            acc.push_str(seg);
            acc
        })
}

/// The `autoscaling/v1` `Scale` view of an object.
fn scale_of(res: &ResourceDef, version: &str, obj: &Value) -> Value {
    let spec = res
        .scale(version)
        .cloned()
        .unwrap_or_else(|| crate::resources::ScaleSpec {
            spec_replicas_path: ".spec.replicas".into(),
            status_replicas_path: ".status.replicas".into(),
            label_selector_path: None,
        });
    let replicas = obj
        .pointer(&json_path_pointer(&spec.spec_replicas_path))
        .cloned()
        .unwrap_or(json!(0));
    let status_replicas = obj
        .pointer(&json_path_pointer(&spec.status_replicas_path))
        .cloned()
        .unwrap_or(json!(0));
    let selector = if res.custom {
        spec.label_selector_path
            .as_deref()
            .and_then(|p| obj.pointer(&json_path_pointer(p)))
            .and_then(Value::as_str)
            .map(String::from)
    } else {
        obj.pointer("/spec/selector")
            .map(|s| LabelSelector::from_object(s).to_query())
    };
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": status_replicas},
    });
    if let Some(sel) = selector {
        scale["status"]["selector"] = json!(sel);
    }
    scale
}

fn write_scale(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    replicas: Value,
    rv: Option<Value>,
) -> Result<Response, ApiError> {
    let res = &t.res;
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            &name,
            vec![(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    let current = state
        .store
        .get(&res.key(), &ns, &name)
        .ok_or_else(|| ApiError::not_found(&res.qualified(), &name))?;
    let mut obj = at_version(&current, res, &t.version);
    let spec = res
        .scale(&t.version)
        .map(|s| s.spec_replicas_path.clone())
        .unwrap_or_else(|| ".spec.replicas".into());
    let pointer = json_path_pointer(&spec);
    let parent = pointer.rsplit_once('/').map(|(p, _)| p).unwrap_or_default();
    if obj.pointer(parent).is_none() {
        return Err(ApiError::internal(format!(
            "object has no {parent} to scale"
        )));
    }
    *obj.pointer_mut(&pointer).unwrap_or(&mut Value::Null) = replicas.clone();
    if obj.pointer(&pointer) != Some(&replicas)
        && let Some(map) = obj.pointer_mut(parent).and_then(Value::as_object_mut)
    {
        map.insert(
            pointer.rsplit('/').next().unwrap_or_default().to_string(),
            replicas,
        );
    }
    if let Some(rv) = rv.filter(|v| v.is_string()) {
        obj["metadata"]["resourceVersion"] = rv;
    }
    let ok = state.store.update(
        &write_ctx(query, headers, false),
        res,
        &t.version,
        &ns,
        &name,
        obj,
        None,
    )?;
    Ok(json_response(
        StatusCode::OK,
        &scale_of(res, &t.version, &ok.object),
        &ok.warnings,
    ))
}

/// A continue token: the list's resourceVersion and the last object returned, hex-encoded
/// (opaque to clients, as a real API server's base64 JSON is).
fn continue_token(rv: u64, ns: &str, name: &str) -> String {
    format!("{rv}/{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Result<crate::store::Continue, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect();
    let s = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let mut parts = s.splitn(3, '/');
    let rv = parts.next().and_then(|r| r.parse().ok()).ok_or_else(bad)?;
    let namespace = parts.next().ok_or_else(bad)?.to_string();
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok(crate::store::Continue {
        rv,
        namespace,
        name,
    })
}

fn list(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let res = &t.res;
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    let fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        &res.kind,
    )?;
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let start = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token)?),
        None => None,
    };
    let (page, remaining, rv) = state
        .store
        .list_page(
            &res.key(),
            t.namespace.as_deref(),
            start.as_ref(),
            limit,
            |o| labels.matches(o) && fields.matches(o),
        )
        .map_err(|_| {
            ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            )
        })?;
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if remaining > 0
        && let Some(last) = page.last()
    {
        let ns = last
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = last
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        metadata["continue"] = json!(continue_token(rv, ns, name));
        metadata["remainingItemCount"] = json!(remaining);
    }
    if wants_table(headers) {
        let page: Vec<Value> = page
            .iter()
            .map(|o| at_version(o, res, &t.version))
            .collect();
        let mut table =
            discovery::table(state, res, &t.version, &page, json!(rv.to_string()), query);
        table["metadata"] = metadata;
        return Ok(json_response(StatusCode::OK, &table, &[]));
    }
    // Serialized item by item, without copying objects already stored at the requested version.
    let api_version = res.api_version(&t.version);
    let mut body = format!(
        "{{\"apiVersion\":{},\"kind\":{},\"metadata\":{},\"items\":[",
        json!(api_version),
        json!(res.list_kind),
        metadata
    );
    for (i, obj) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let item = if obj.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str()) {
            serde_json::to_string(&**obj)
        } else {
            serde_json::to_string(&at_version(obj, res, &t.version))
        };
        body.push_str(&item.map_err(|e| ApiError::internal(e.to_string()))?);
    }
    body.push_str("]}");
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// How a watch event looks to one watcher with selectors: real servers turn a change that moves an
/// object into or out of the selection into ADDED or DELETED.
fn filter_event(
    event: &StoreEvent,
    ns: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<EventType> {
    if ns.is_some_and(|n| n != event.namespace) {
        return None;
    }
    let now = labels.matches(&event.object) && fields.matches(&event.object);
    let before = event
        .old
        .as_ref()
        .map(|o| labels.matches(o) && fields.matches(o));
    match (event.kind, before, now) {
        (EventType::Deleted, _, true) => Some(EventType::Deleted),
        (EventType::Deleted, _, false) => None,
        (EventType::Added, _, true) => Some(EventType::Added),
        (EventType::Modified, Some(true), true) => Some(EventType::Modified),
        (EventType::Modified, Some(true), false) => Some(EventType::Deleted),
        (EventType::Modified, _, true) => Some(EventType::Added),
        _ => None,
    }
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    state: &AppState,
    t: &Target,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let res = t.res.clone();
    let version = t.version.clone();
    let api_version = res.api_version(&version);
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )?;
    let mut fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        &res.kind,
    )?;
    if let Some(name) = &t.name {
        // A watch on a single object path.
        fields = FieldSelector::parse(&format!("metadata.name={name}"), &res.kind)?;
    }
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let send_initial = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from: Option<u64> = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let ns = t.namespace.clone();
    let store = state.store.clone();
    let key = res.key();
    let (initial, start_rv, replay, mut rx) = match from.filter(|_| !send_initial) {
        None => {
            let (items, rv, rx) = store.snapshot_and_subscribe(&key);
            (items, rv, Vec::new(), rx)
        }
        Some(from) => match store.subscribe(&key, from) {
            Ok((replay, rx)) => (Vec::new(), from, replay, rx),
            Err(e) => {
                state.controls.count(format!("expired {}", res.plural));
                let line = event_line("ERROR", &e.to_status());
                return Ok(stream_response(
                    futures::stream::once(async move { line }).boxed(),
                ));
            }
        },
    };
    let mut epoch = state.watch_epoch.subscribe();
    epoch.mark_unchanged();
    let interval = state.settings.bookmark_interval;
    let kind = res.kind.clone();
    let controls = state.controls.clone();
    let plural = res.plural.clone();
    let stream = async_stream::stream! {
        let mut progress = start_rv;
        let serve = |obj: &Value| -> Value {
            if crate::events::is_events_api(&res) {
                return at_version(obj, &res, &version);
            }
            let mut o = obj.clone();
            o["apiVersion"] = json!(api_version);
            o
        };
        for obj in &initial {
            let ns_ok = ns.as_deref().is_none_or(|n| obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(n));
            if ns_ok && labels.matches(obj) && fields.matches(obj) {
                yield event_line("ADDED", &serve(obj));
            }
        }
        if send_initial && bookmarks {
            yield event_line("BOOKMARK", &json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": start_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}));
        }
        let emit = |event: &StoreEvent| -> Option<Bytes> {
            let kind = filter_event(event, ns.as_deref(), &labels, &fields)?;
            if kind == event.kind && event.object.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str()) {
                return Some(Bytes::copy_from_slice(event.line().as_bytes()));
            }
            Some(event_line(kind.as_str(), &serve(&event.object)))
        };
        for event in &replay {
            progress = progress.max(event.rv);
            if let Some(line) = emit(event) {
                yield line;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                // A dropped watch delivers nothing more, even if events are already queued.
                biased;
                _ = epoch.changed() => break,
                received = rx.recv() => match received {
                    Ok(event) => {
                        if event.rv <= progress || event.key != key {
                            continue;
                        }
                        progress = event.rv;
                        if let Some(line) = emit(&event) {
                            if let Some(lag) = controls.watch_lag(&plural) {
                                tokio::time::sleep(lag).await;
                            }
                            yield line;
                        }
                    }
                    // A watcher that falls too far behind is closed; the client resumes from its
                    // last resourceVersion (or relists after a 410).
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ticker.tick(), if bookmarks => {
                    yield event_line("BOOKMARK", &json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": progress.to_string()}}));
                }
                _ = &mut deadline => break,
            }
        }
    };
    Ok(stream_response(stream.boxed()))
}

fn stream_response(stream: futures::stream::BoxStream<'static, Bytes>) -> Response {
    let body = Body::from_stream(stream.map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
