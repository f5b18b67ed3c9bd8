//! Events: one storage served through two APIs, as in kube-apiserver.
//!
//! core/v1 `events` and events.k8s.io/v1 `events` are one resource there: objects are kept as the
//! internal `core.Event` and converted to the shape of the API a client uses. Here the stored shape
//! is core/v1 (the internal type's twin) and events.k8s.io/v1 objects, patches, field selectors
//! and validation go through the field mapping of `pkg/apis/events/v1/conversion.go`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::{ResKey, ResourceDef};

/// The group of the newer Event API.
pub const GROUP: &str = "events.k8s.io";

/// Each top-level field as (core/v1 name, events.k8s.io/v1 name); metadata is shared as is.
const FIELDS: [(&str, &str); 14] = [
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("action", "action"),
    ("reason", "reason"),
    ("type", "type"),
];

/// Field labels selectable on the storage (`ToSelectableFields` of the core Event strategy), but
/// `source`, whose value falls back to `reportingComponent` and is not a plain field here.
pub const SELECTABLE: [&str; 12] = [
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "type",
];

/// events.k8s.io/v1 field labels and the storage's names for them (its field label conversion).
const EVENTS_V1_LABELS: [(&str, &str); 12] = [
    ("metadata.name", "metadata.name"),
    ("metadata.namespace", "metadata.namespace"),
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reason", "reason"),
    ("reportingController", "reportingComponent"),
    ("type", "type"),
];

const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// Whether `res` is events.k8s.io/v1 `events`, served from the core Event storage.
pub fn is_events_api(res: &ResourceDef) -> bool {
    res.group == GROUP && res.plural == "events"
}

fn is_core_events(res: &ResourceDef) -> bool {
    res.group.is_empty() && res.plural == "events"
}

/// Where Events of both APIs are stored.
pub fn storage_key() -> ResKey {
    ResKey::new("", "events")
}

/// A stored (core/v1) Event in the events.k8s.io/v1 shape.
pub fn to_events_v1(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(format!("{GROUP}/v1")));
    out.insert("kind".into(), json!("Event"));
    if let Some(meta) = core.get("metadata") {
        out.insert("metadata".into(), meta.clone());
    }
    for (core_name, events_name) in FIELDS {
        if let Some(v) = core.get(core_name) {
            out.insert(events_name.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 object (or a partial one, an applied configuration) in the core/v1 shape.
/// Fields neither API knows are kept, for the core decoding to drop or refuse.
pub fn to_core(events: &Value) -> Value {
    let Some(map) = events.as_object() else {
        return events.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let name = FIELDS
            .iter()
            .find(|(_, e)| e == k)
            .map(|(c, _)| *c)
            .unwrap_or(k.as_str());
        out.insert(name.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), json!("v1"));
    Value::Object(out)
}

/// Checks an events.k8s.io/v1 object as that API does (decoding, then the strict validation of
/// `ValidateEventCreate`/`ValidateEventUpdate` for requests at events.k8s.io/v1) and returns the
/// core/v1 object to store. `old` is the stored object on updates.
pub fn from_events_v1(
    res: &ResourceDef,
    version: &str,
    obj: Value,
    ns: &str,
    old: Option<&Value>,
) -> Result<Value, ApiError> {
    let decoded = match res.typed_check {
        Some(check) => check(&obj).map_err(|e| {
            ApiError::bad_request(format!(
                "Event in version \"{version}\" cannot be handled as a Event: {e}"
            ))
        })?,
        None => obj,
    };
    let mut core = to_core(&decoded);
    // `regarding` is a struct, not a pointer, in the Go types: absent means empty.
    if core.get("involvedObject").is_none_or(Value::is_null) {
        core["involvedObject"] = json!({});
    }
    let name = str_at(&core, "/metadata/name");
    let mut errors = legacy_errors(&core, ns, "reportingController");
    match old {
        None => errors.extend(create_errors(&core)),
        Some(old) => errors.extend(update_errors(&core, old)),
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid("Event", GROUP, name, errors));
    }
    Ok(core)
}

/// The checks every Event write passes, through either API (`legacyValidateEvent`), for a
/// core/v1 write of `obj` (already decoded, with its namespace set).
pub fn validate_core_write(res: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    if !is_core_events(res) {
        return Ok(());
    }
    let ns = str_at(obj, "/metadata/namespace");
    let errors = legacy_errors(obj, ns, "reportingComponent");
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "Event",
            "",
            str_at(obj, "/metadata/name"),
            errors,
        ))
    }
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A timestamp field is unset when absent, null or empty (Go's zero time).
fn time_set(obj: &Value, field: &str) -> bool {
    obj.get(field)
        .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
}

fn required(field: &str) -> (String, String) {
    (field.to_string(), "Required value".to_string())
}

fn invalid(field: &str, value: &str, detail: &str) -> (String, String) {
    (
        field.to_string(),
        format!("Invalid value: {value:?}: {detail}"),
    )
}

fn legacy_errors(ev: &Value, ns: &str, reporting_field: &str) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let involved_ns = str_at(ev, "/involvedObject/namespace");
    let mismatch = || {
        invalid(
            "involvedObject.namespace",
            involved_ns,
            "does not match event.namespace",
        )
    };
    if !time_set(ev, "eventTime") {
        // Events without eventTime come from old clients: only the namespaces must agree.
        let agrees = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !agrees {
            errors.push(mismatch());
        }
        return errors;
    }
    if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
        errors.push(mismatch());
    }
    let controller = str_at(ev, "/reportingComponent");
    if controller.is_empty() {
        errors.push(required(reporting_field));
    }
    for msg in qualified_name_errors(controller) {
        errors.push(invalid(reporting_field, controller, &msg));
    }
    let limit = |n: usize| format!("can have at most {n} characters");
    for (field, limit_chars, required_too) in [
        ("reportingInstance", REPORTING_INSTANCE_LIMIT, true),
        ("action", ACTION_LIMIT, true),
        ("reason", REASON_LIMIT, true),
        ("message", NOTE_LIMIT, false),
    ] {
        let value = str_at(ev, &format!("/{field}"));
        if required_too && value.is_empty() {
            errors.push(required(field));
        }
        if value.chars().count() > limit_chars {
            errors.push(invalid(field, "", &limit(limit_chars)));
        }
    }
    errors
}

fn series_errors(ev: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if let Some(series) = ev.get("series").filter(|s| !s.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errors.push(invalid("series.count", "", "should be at least 2"));
        }
        if !time_set(series, "lastObservedTime") {
            errors.push(required("series.lastObservedTime"));
        }
    }
    errors
}

fn create_errors(ev: &Value) -> Vec<(String, String)> {
    let mut errors = series_errors(ev);
    if !time_set(ev, "eventTime") {
        errors.push(required("eventTime"));
    }
    let type_ = str_at(ev, "/type");
    if type_ != "Normal" && type_ != "Warning" {
        errors.push(invalid("type", "", &format!("has invalid value: {type_}")));
    }
    for field in ["firstTimestamp", "lastTimestamp"] {
        if time_set(ev, field) {
            errors.push(invalid(field, "", "needs to be unset"));
        }
    }
    if ev.get("count").and_then(Value::as_i64).unwrap_or(0) != 0 {
        errors.push(invalid("count", "", "needs to be unset"));
    }
    if !str_at(ev, "/source/component").is_empty() || !str_at(ev, "/source/host").is_empty() {
        errors.push(invalid("source", "", "needs to be unset"));
    }
    errors
}

fn update_errors(ev: &Value, old: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if ev.get("series") != old.get("series") {
        errors.extend(series_errors(ev));
    }
    // An Event only records what happened: through events.k8s.io only its series may change.
    let empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v == "" || v == &json!({}));
    for (core_name, _) in FIELDS.iter().filter(|(c, _)| *c != "series") {
        let (new_v, old_v) = (ev.get(core_name), old.get(core_name));
        if new_v != old_v && !(empty(new_v) && empty(old_v)) {
            let shown = new_v.map(Value::to_string).unwrap_or_else(|| "null".into());
            errors.push((
                events_name_for_update(core_name).to_string(),
                format!("Invalid value: {shown}: field is immutable"),
            ));
        }
    }
    errors
}

/// The field names `ValidateEventUpdate` reports (internal names, but `reportingController`).
fn events_name_for_update(core_name: &str) -> &str {
    match core_name {
        "reportingComponent" => "reportingController",
        other => other,
    }
}

/// `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name of up to 63
/// alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric.
fn qualified_name_errors(value: &str) -> Vec<String> {
    const NAME_FMT: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                return vec!["prefix part must be non-empty".into()];
            }
            let ok = prefix.len() <= 253
                && prefix.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !ok {
                return vec![
                    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into(),
                ];
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        return vec!["name part must be non-empty".into()];
    }
    let mut errors = Vec::new();
    if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".into());
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !chars_ok || !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        errors.push(NAME_FMT.into());
    }
    errors
}

/// The query of a request on either Event API, with its field selector spelled in the storage's
/// field names; `None` when nothing needs translating. Labels the API does not accept are a 400,
/// as kube-apiserver's field label conversion answers.
pub fn storage_query(
    res: &ResourceDef,
    query: &HashMap<String, String>,
) -> Result<Option<HashMap<String, String>>, ApiError> {
    let events_api = is_events_api(res);
    if !(events_api || is_core_events(res)) {
        return Ok(None);
    }
    let Some(selector) = query.get("fieldSelector").filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let mut parts = Vec::new();
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some(at) = part.find(['!', '=']) else {
            // Malformed: left for the selector parser to refuse.
            parts.push(part.to_string());
            continue;
        };
        let (field, rest) = part.split_at(at);
        let field = field.trim();
        let storage_name = if events_api {
            EVENTS_V1_LABELS
                .iter()
                .find(|(label, _)| *label == field)
                .map(|(_, s)| *s)
        } else {
            SELECTABLE.iter().find(|s| **s == field).copied()
        };
        let Some(storage_name) = storage_name else {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        };
        parts.push(format!("{storage_name}{rest}"));
    }
    let mut translated = query.clone();
    translated.insert("fieldSelector".into(), parts.join(","));
    Ok(Some(translated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_def() -> ResourceDef {
        crate::resources::builtins()
            .into_iter()
            .find(is_events_api)
            .expect("events.k8s.io events are built in")
    }

    fn recorder_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "eventTime": "2026-11-27T10:00:00.000000Z",
            "reportingController": "sluice", "reportingInstance": "sluice-0",
            "action": "Promote", "reason": "StepCompleted", "note": "step 1 of 3", "type": "Normal",
            "regarding": {"kind": "Rollout", "namespace": "default", "name": "web", "uid": "u-1"},
        })
    }

    #[test]
    fn conversion_maps_every_field_both_ways() {
        let events = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"name": "a"}, "related": {"name": "b"}, "note": "n",
            "deprecatedSource": {"component": "c"}, "deprecatedFirstTimestamp": "t1",
            "deprecatedLastTimestamp": "t2", "deprecatedCount": 3,
            "reportingController": "rc", "reportingInstance": "ri", "eventTime": "t0",
            "series": {"count": 2, "lastObservedTime": "t3"}, "action": "A", "reason": "R",
            "type": "Normal",
        });
        let core = to_core(&events);
        assert_eq!(
            core,
            json!({
                "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
                "involvedObject": {"name": "a"}, "related": {"name": "b"}, "message": "n",
                "source": {"component": "c"}, "firstTimestamp": "t1", "lastTimestamp": "t2",
                "count": 3, "reportingComponent": "rc", "reportingInstance": "ri",
                "eventTime": "t0", "series": {"count": 2, "lastObservedTime": "t3"},
                "action": "A", "reason": "R", "type": "Normal",
            })
        );
        assert_eq!(to_events_v1(&core), events);
    }

    #[test]
    fn events_api_requires_what_kube_apiserver_requires() {
        let def = events_def();
        let mut ev = recorder_event();
        assert!(from_events_v1(&def, "v1", ev.clone(), "default", None).is_ok());
        for field in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            ev.as_object_mut().map(|m| m.remove(field));
        }
        ev["type"] = json!("Odd");
        ev["deprecatedCount"] = json!(4);
        let err = from_events_v1(&def, "v1", ev, "default", None).unwrap_err();
        assert_eq!(err.code, 422);
        let details = err.details.unwrap();
        let fields: Vec<&str> = details["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            ["eventTime", "type", "count"],
            "without eventTime the reporting fields are not required, as for legacy events"
        );
    }

    #[test]
    fn events_api_refuses_changes_other_than_the_series() {
        let def = events_def();
        let stored = from_events_v1(&def, "v1", recorder_event(), "default", None).unwrap();
        let mut repeat = recorder_event();
        repeat["series"] = json!({"count": 2, "lastObservedTime": "2026-11-27T10:01:00.000000Z"});
        assert!(from_events_v1(&def, "v1", repeat.clone(), "default", Some(&stored)).is_ok());
        repeat["note"] = json!("changed");
        repeat["series"]["count"] = json!(1);
        let err = from_events_v1(&def, "v1", repeat, "default", Some(&stored)).unwrap_err();
        assert!(err.message.contains("series.count"), "{}", err.message);
        assert!(
            err.message
                .contains("message: Invalid value: \"changed\": field is immutable"),
            "{}",
            err.message
        );
    }

    #[test]
    fn qualified_names_follow_kubernetes() {
        assert!(qualified_name_errors("sluice").is_empty());
        assert!(qualified_name_errors("sluice.dev/rollouts").is_empty());
        assert!(!qualified_name_errors("-bad").is_empty());
        assert!(!qualified_name_errors("a/b/c").is_empty());
        assert!(!qualified_name_errors(&"x".repeat(64)).is_empty());
    }

    #[test]
    fn field_selectors_of_both_apis_name_the_same_storage_fields() {
        let defs = crate::resources::builtins();
        let core = defs.iter().find(|d| is_core_events(d)).unwrap();
        let events = defs.iter().find(|d| is_events_api(d)).unwrap();
        let q = |s: &str| HashMap::from([("fieldSelector".to_string(), s.to_string())]);
        let translated = storage_query(events, &q("regarding.name=web,reportingController!=x"))
            .unwrap()
            .unwrap();
        assert_eq!(
            translated["fieldSelector"],
            "involvedObject.name=web,reportingComponent!=x"
        );
        let same = storage_query(core, &q("involvedObject.uid==u,type=Normal"))
            .unwrap()
            .unwrap();
        assert_eq!(same["fieldSelector"], "involvedObject.uid==u,type=Normal");
        assert_eq!(
            storage_query(core, &q("regarding.name=web"))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            storage_query(events, &q("involvedObject.name=web"))
                .unwrap_err()
                .code,
            400
        );
    }
}
