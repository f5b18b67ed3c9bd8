//! Gateway API routes (pure: select the weighted rules, weight them, place managed rules).
//!
//! Works on the untyped JSON of a live HTTPRoute, GRPCRoute, TCPRoute or TLSRoute and returns the
//! desired JSON; the caller turns the difference into a JSON patch. What changes:
//! - in every rule whose `backendRefs` include both the stable and the canary Service (a
//!   *weighted* rule), the `weight` of those two backendRefs: canary `weight`, stable
//!   `maxTrafficWeight - weight`. Any other backendRef in the rule keeps its weight (Gateway API
//!   weights are proportions, so it keeps its share relative to the total); rules that do not
//!   reference both Services are never touched;
//! - Sluice's own rules for `setHeaderRoute` and `setMirrorRoute`, placed before the user's rules
//!   in `managedRoutes` order and named after the managed route;
//! - the annotations [`MANAGED_BY_ANNOTATION`] and [`MANAGED_RULES_ANNOTATION`].
//!
//! A rule is Sluice's exactly when its name is listed in [`MANAGED_RULES_ANNOTATION`], which is
//! written in the same patch as the rules themselves: a name field alone could be a user's rule
//! that happens to share a managed route's name, and rule indices shift whenever anyone edits the
//! list. A user rule carrying a managed route's name without being listed is refused, so Sluice
//! never overwrites it.
//!
//! Precedence: Gateway implementations order matches by specificity (path, method, number of
//! header and query matches) before rule order, so a header rule copies the matches of the
//! weighted rule and adds its headers: it is always more specific than the rule it narrows.
//! Placing it first also settles any remaining tie in its favour.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::TrafficError;
use crate::api::constants::{MANAGED_BY_ANNOTATION, MANAGED_RULES_ANNOTATION};
use crate::api::rollout::{HeaderRoutingMatch, RouteMatch, StringMatch};
use crate::plan::ManagedRoutes;

/// API group of the Gateway API.
pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The route kinds the router weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// `HTTPRoute` (`v1`).
    Http,
    /// `GRPCRoute` (`v1`).
    Grpc,
    /// `TCPRoute` (`v1alpha2`).
    Tcp,
    /// `TLSRoute` (`v1alpha2`).
    Tls,
}

impl RouteKind {
    /// Every kind, in the order routes are handled.
    pub const ALL: [RouteKind; 4] = [
        RouteKind::Http,
        RouteKind::Grpc,
        RouteKind::Tcp,
        RouteKind::Tls,
    ];

    /// The kind's name (`HTTPRoute`, ...).
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
            RouteKind::Tcp => "TCPRoute",
            RouteKind::Tls => "TLSRoute",
        }
    }

    /// The plural resource name (`httproutes`, ...).
    pub fn plural(self) -> &'static str {
        match self {
            RouteKind::Http => "httproutes",
            RouteKind::Grpc => "grpcroutes",
            RouteKind::Tcp => "tcproutes",
            RouteKind::Tls => "tlsroutes",
        }
    }

    /// The version Sluice reads and writes: the GA `v1` for HTTP and gRPC, `v1alpha2` (the only
    /// one served) for TCP and TLS.
    pub fn version(self) -> &'static str {
        match self {
            RouteKind::Http | RouteKind::Grpc => "v1",
            RouteKind::Tcp | RouteKind::Tls => "v1alpha2",
        }
    }

    /// The prefix of its configuration fields (`http` for `httpRoute` / `httpRoutes`).
    pub fn config_prefix(self) -> &'static str {
        match self {
            RouteKind::Http => "http",
            RouteKind::Grpc => "grpc",
            RouteKind::Tcp => "tcp",
            RouteKind::Tls => "tls",
        }
    }

    /// The kind read from a manifest's `kind`.
    pub fn from_kind(kind: &str) -> Option<RouteKind> {
        RouteKind::ALL.into_iter().find(|k| k.kind() == kind)
    }

    fn lower(self) -> String {
        self.kind().to_lowercase()
    }
}

/// What the router knows about one configured route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteInputs {
    /// Route kind.
    pub kind: RouteKind,
    /// Route name.
    pub name: String,
    /// Route namespace.
    pub namespace: String,
    /// Rollout field naming the route, for errors.
    pub field: String,
    /// Header and mirror rules are added to this route.
    pub takes_managed_routes: bool,
    /// The stable Service.
    pub stable: String,
    /// The canary Service.
    pub canary: String,
    /// Namespace of both Services (the Rollout's).
    pub service_namespace: String,
    /// Names listed in `trafficRouting.managedRoutes`, highest precedence first.
    pub managed_route_names: Vec<String>,
    /// Rollout name, for the managed-by annotation.
    pub rollout: String,
}

impl RouteInputs {
    fn invalid(&self, message: String) -> TrafficError {
        TrafficError::InvalidReference {
            field: self.field.clone(),
            message,
        }
    }

    /// `httproute 'web'` (with its namespace when it is not the Services').
    pub(crate) fn describe(&self) -> String {
        if self.namespace == self.service_namespace {
            format!("{} '{}'", self.kind.lower(), self.name)
        } else {
            format!("{} '{}/{}'", self.kind.lower(), self.namespace, self.name)
        }
    }
}

/// Which end of the split a backendRef is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Canary,
    Stable,
    Other,
}

/// A backendRef refers to a Service when its group is the core group and its kind `Service`
/// (both the defaults), in its own `namespace` or else the route's.
fn role(backend: &Value, inputs: &RouteInputs) -> Role {
    let s = |k: &str| backend.get(k).and_then(Value::as_str);
    let core = matches!(s("group"), None | Some("") | Some("core"));
    let service = matches!(s("kind"), None | Some("Service"));
    let namespace = s("namespace").unwrap_or(&inputs.namespace);
    if !core || !service || namespace != inputs.service_namespace {
        return Role::Other;
    }
    match s("name") {
        Some(n) if n == inputs.canary => Role::Canary,
        Some(n) if n == inputs.stable => Role::Stable,
        _ => Role::Other,
    }
}

fn rules(route: &Value) -> &[Value] {
    route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn backend_refs(rule: &Value) -> &[Value] {
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn rule_name(rule: &Value) -> Option<&str> {
    rule.get("name").and_then(Value::as_str)
}

/// The rule names recorded in [`MANAGED_RULES_ANNOTATION`].
pub(crate) fn recorded_managed_rules(route: &Value) -> BTreeSet<String> {
    route
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MANAGED_RULES_ANNOTATION))
        .and_then(Value::as_str)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn is_managed(rule: &Value, recorded: &BTreeSet<String>) -> bool {
    rule_name(rule).is_some_and(|n| recorded.contains(n))
}

fn describe_rule(i: usize, rule: &Value) -> String {
    match rule_name(rule) {
        Some(n) => format!("rule '{n}'"),
        None => format!("rules[{i}]"),
    }
}

/// Indices of the user's rules that reference both Services. Fails when there is none, or when a
/// user rule carries the name of a managed route without being Sluice's.
fn weighted_rules(route: &Value, inputs: &RouteInputs) -> Result<Vec<usize>, TrafficError> {
    let recorded = recorded_managed_rules(route);
    let mut out = Vec::new();
    for (i, rule) in rules(route).iter().enumerate() {
        if is_managed(rule, &recorded) {
            continue;
        }
        if let Some(name) = rule_name(rule)
            && inputs.managed_route_names.iter().any(|m| m == name)
        {
            return Err(inputs.invalid(format!(
                "{} of {} is named like the managed route '{name}' but was not written by \
                 Sluice; rename the rule or the managed route",
                describe_rule(i, rule),
                inputs.describe()
            )));
        }
        let roles: Vec<Role> = backend_refs(rule).iter().map(|b| role(b, inputs)).collect();
        if roles.contains(&Role::Canary) && roles.contains(&Role::Stable) {
            out.push(i);
        }
    }
    if out.is_empty() {
        let ns = if inputs.namespace == inputs.service_namespace {
            String::new()
        } else {
            format!(
                " (from another namespace, a backendRef needs `namespace: {}`)",
                inputs.service_namespace
            )
        };
        return Err(inputs.invalid(format!(
            "{} has no rule whose backendRefs reference both the stable Service '{}' and the \
             canary Service '{}'{ns}",
            inputs.describe(),
            inputs.stable,
            inputs.canary
        )));
    }
    Ok(out)
}

/// Checks the references `apply` relies on (pure): the route has a weighted rule and no
/// impostor of a managed rule.
pub(crate) fn check_route(route: &Value, inputs: &RouteInputs) -> Result<(), TrafficError> {
    weighted_rules(route, inputs).map(|_| ())
}

fn weight_of(backend: &Value) -> i64 {
    // The Gateway API's default weight is 1.
    backend.get("weight").and_then(Value::as_i64).unwrap_or(1)
}

/// The canary weight configured on `route`: the highest among its weighted rules.
pub(crate) fn observed_weight(route: &Value, inputs: &RouteInputs) -> Result<i32, TrafficError> {
    let all = rules(route);
    let mut weight = 0i64;
    for i in weighted_rules(route, inputs)? {
        for b in backend_refs(&all[i]) {
            if role(b, inputs) == Role::Canary {
                weight = weight.max(weight_of(b));
            }
        }
    }
    Ok(weight.clamp(0, i64::from(i32::MAX)) as i32)
}

/// A header match value in the Gateway API's terms: exact stays exact; a prefix becomes an
/// anchored regular expression (the Gateway API has no prefix match for headers).
fn header_value(name: &str, m: &StringMatch, inputs: &RouteInputs) -> Result<Value, TrafficError> {
    let (kind, value) = match (&m.exact, &m.prefix, &m.regex) {
        (Some(v), _, _) => ("Exact", v.clone()),
        (None, Some(p), _) => ("RegularExpression", format!("^{}.*", regex::escape(p))),
        (None, None, Some(r)) => ("RegularExpression", r.clone()),
        (None, None, None) => {
            return Err(inputs.invalid(format!(
                "the match of header '{name}' has no exact, prefix or regex value"
            )));
        }
    };
    Ok(json!({"type": kind, "name": name, "value": value}))
}

fn header_matches(
    matches: &[HeaderRoutingMatch],
    inputs: &RouteInputs,
) -> Result<Vec<Value>, TrafficError> {
    matches
        .iter()
        .map(|m| header_value(&m.header_name, &m.header_value, inputs))
        .collect()
}

/// The canary backendRef of a weighted rule, carrying all the traffic of a managed rule.
fn canary_backend(rule: &Value, inputs: &RouteInputs, max_weight: i32) -> Option<Value> {
    let mut b = backend_refs(rule)
        .iter()
        .find(|b| role(b, inputs) == Role::Canary)?
        .clone();
    b["weight"] = json!(max_weight);
    Some(b)
}

/// The user's matches of a weighted rule, narrowed by `headers`; a rule without matches matches
/// everything (`PathPrefix /` for HTTP, as the Gateway API defaults it).
fn narrowed_matches(rule: &Value, kind: RouteKind, headers: &[Value]) -> Vec<Value> {
    let user: Vec<Value> = rule
        .get("matches")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!({})]);
    user.into_iter()
        .map(|mut m| {
            let Some(obj) = m.as_object_mut() else {
                return m;
            };
            if kind == RouteKind::Http && !obj.contains_key("path") {
                obj.insert("path".into(), json!({"type": "PathPrefix", "value": "/"}));
            }
            let mut all: Vec<Value> = obj
                .get("headers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            all.extend(headers.iter().cloned());
            obj.insert("headers".into(), Value::Array(all));
            m
        })
        .collect()
}

fn header_rule(
    name: &str,
    matches: &[HeaderRoutingMatch],
    weighted: &Value,
    inputs: &RouteInputs,
    max_weight: i32,
) -> Result<Value, TrafficError> {
    let headers = header_matches(matches, inputs)?;
    let canary = canary_backend(weighted, inputs, max_weight)
        .ok_or_else(|| inputs.invalid(format!("{} has no canary backendRef", inputs.describe())))?;
    let mut rule = Map::new();
    rule.insert("name".into(), json!(name));
    rule.insert(
        "matches".into(),
        Value::Array(narrowed_matches(weighted, inputs.kind, &headers)),
    );
    // The canary is reached through the same filters (rewrites, header modifiers) as the rule
    // it narrows, so that it sees the requests the stable version sees.
    if let Some(filters) = weighted
        .get("filters")
        .filter(|f| f.as_array().is_some_and(|a| !a.is_empty()))
    {
        rule.insert("filters".into(), filters.clone());
    }
    rule.insert("backendRefs".into(), json!([canary]));
    Ok(Value::Object(rule))
}

fn path_match(m: &StringMatch, inputs: &RouteInputs) -> Result<Value, TrafficError> {
    Ok(match (&m.exact, &m.prefix, &m.regex) {
        (Some(v), _, _) => json!({"type": "Exact", "value": v}),
        (None, Some(p), _) => json!({"type": "PathPrefix", "value": p}),
        (None, None, Some(r)) => json!({"type": "RegularExpression", "value": r}),
        (None, None, None) => {
            return Err(inputs.invalid(
                "a mirror route's path match has no exact, prefix or regex value".into(),
            ));
        }
    })
}

fn mirror_matches(
    matches: &[RouteMatch],
    inputs: &RouteInputs,
) -> Result<Vec<Value>, TrafficError> {
    let mut out = Vec::new();
    for m in matches {
        let mut o = Map::new();
        let path = match &m.path {
            Some(p) => path_match(p, inputs)?,
            None => json!({"type": "PathPrefix", "value": "/"}),
        };
        o.insert("path".into(), path);
        if !m.headers.is_empty() {
            let headers: Result<Vec<Value>, _> = m
                .headers
                .iter()
                .map(|(k, v)| header_value(k, v, inputs))
                .collect();
            o.insert("headers".into(), Value::Array(headers?));
        }
        if let Some(method) = &m.method {
            // The Gateway API matches methods by name only.
            let exact = method
                .exact
                .as_ref()
                .filter(|_| method.prefix.is_none() && method.regex.is_none())
                .ok_or_else(|| {
                    inputs.invalid(
                        "a mirror route's method match must be exact with the Gateway API".into(),
                    )
                })?;
            o.insert("method".into(), json!(exact.to_uppercase()));
        }
        out.push(Value::Object(o));
    }
    if out.is_empty() {
        out.push(json!({"path": {"type": "PathPrefix", "value": "/"}}));
    }
    Ok(out)
}

fn mirror_rule(
    name: &str,
    matches: &[RouteMatch],
    percentage: Option<i32>,
    weighted: &Value,
    inputs: &RouteInputs,
) -> Result<Value, TrafficError> {
    let canary = backend_refs(weighted)
        .iter()
        .find(|b| role(b, inputs) == Role::Canary)
        .ok_or_else(|| inputs.invalid(format!("{} has no canary backendRef", inputs.describe())))?;
    let mut target = Map::new();
    for key in ["group", "kind", "name", "namespace", "port"] {
        if let Some(v) = canary.get(key) {
            target.insert(key.into(), v.clone());
        }
    }
    let mut mirror = Map::new();
    mirror.insert("backendRef".into(), Value::Object(target));
    if let Some(p) = percentage {
        mirror.insert("percent".into(), json!(p.clamp(0, 100)));
    }
    let mut filters: Vec<Value> = weighted
        .get("filters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    filters.push(json!({"type": "RequestMirror", "requestMirror": Value::Object(mirror)}));
    Ok(json!({
        "name": name,
        "matches": mirror_matches(matches, inputs)?,
        "filters": filters,
        // The weighted rule's backends at their current weights: mirrored requests are still
        // answered by the normal split.
        "backendRefs": weighted.get("backendRefs").cloned().unwrap_or(json!([])),
    }))
}

/// Sets (or with `None` removes) an annotation on an untyped object.
fn set_annotation(obj: &mut Value, key: &str, value: Option<&str>) {
    super::virtual_service::set_annotation(obj, key, value);
}

/// The route with the canary at `weight` (of `max_weight`) in every weighted rule and exactly the
/// managed rules of `managed` first (when this route takes them). Everything else is carried over
/// from `live`.
pub(crate) fn desired_route(
    live: &Value,
    inputs: &RouteInputs,
    weight: i32,
    max_weight: i32,
    managed: &ManagedRoutes,
) -> Result<Value, TrafficError> {
    let weighted = weighted_rules(live, inputs)?;
    let recorded = recorded_managed_rules(live);
    let canary_weight = weight.clamp(0, max_weight);
    let stable_weight = max_weight - canary_weight;
    let mut user_rules: Vec<Value> = Vec::new();
    let mut first_weighted: Option<Value> = None;
    for (i, rule) in rules(live).iter().enumerate() {
        if is_managed(rule, &recorded) {
            continue;
        }
        let mut rule = rule.clone();
        if weighted.contains(&i) {
            if let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) {
                for b in refs.iter_mut() {
                    match role(b, inputs) {
                        Role::Canary => b["weight"] = json!(canary_weight),
                        Role::Stable => b["weight"] = json!(stable_weight),
                        Role::Other => {}
                    }
                }
            }
            if first_weighted.is_none() {
                first_weighted = Some(rule.clone());
            }
        }
        user_rules.push(rule);
    }

    let declared: Vec<&str> = inputs
        .managed_route_names
        .iter()
        .map(String::as_str)
        .collect();
    for wanted in managed
        .header_routes
        .iter()
        .map(|h| h.name.as_str())
        .chain(managed.mirror_routes.iter().map(|m| m.name.as_str()))
    {
        if !declared.contains(&wanted) {
            return Err(TrafficError::InvalidReference {
                field: "spec.strategy.canary.trafficRouting.managedRoutes".into(),
                message: format!(
                    "route '{wanted}' is set by a step but not listed in managedRoutes"
                ),
            });
        }
    }
    let mut managed_rules = Vec::new();
    if inputs.takes_managed_routes
        && let Some(base) = &first_weighted
    {
        for name in &declared {
            if let Some(h) = managed.header_routes.iter().find(|h| h.name == *name)
                && matches!(inputs.kind, RouteKind::Http | RouteKind::Grpc)
            {
                managed_rules.push(header_rule(name, &h.match_, base, inputs, max_weight)?);
            } else if let Some(m) = managed.mirror_routes.iter().find(|m| m.name == *name)
                && inputs.kind == RouteKind::Http
            {
                managed_rules.push(mirror_rule(name, &m.match_, m.percentage, base, inputs)?);
            }
        }
    }
    let names: Vec<String> = managed_rules
        .iter()
        .filter_map(|r| rule_name(r).map(str::to_string))
        .collect();
    let mut new_rules = managed_rules;
    new_rules.extend(user_rules);
    let mut route = live.clone();
    if let Some(spec) = route.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("rules".into(), Value::Array(new_rules));
    }
    set_annotation(&mut route, MANAGED_BY_ANNOTATION, Some(&inputs.rollout));
    let joined = names.join(",");
    set_annotation(
        &mut route,
        MANAGED_RULES_ANNOTATION,
        (!names.is_empty()).then_some(joined.as_str()),
    );
    Ok(route)
}

/// The route as it should be once the Rollout is gone (or no longer routes through it): all
/// traffic to stable, no managed rules, no Sluice annotations.
pub(crate) fn released_route(
    live: &Value,
    inputs: &RouteInputs,
    max_weight: i32,
) -> Result<Value, TrafficError> {
    let mut route = desired_route(live, inputs, 0, max_weight, &ManagedRoutes::default())?;
    set_annotation(&mut route, MANAGED_BY_ANNOTATION, None);
    Ok(route)
}

/// Whether a ReferenceGrant (as JSON) in the Services' namespace lets routes of `kind` in
/// `route_namespace` reference the Service `service`.
pub(crate) fn grant_allows(
    grant: &Value,
    kind: RouteKind,
    route_namespace: &str,
    service: &str,
) -> bool {
    let list = |k: &str| {
        grant
            .pointer(&format!("/spec/{k}"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let from = list("from").iter().any(|f| {
        s(f, "group").as_deref() == Some(GATEWAY_GROUP)
            && s(f, "kind").as_deref() == Some(kind.kind())
            && s(f, "namespace").as_deref() == Some(route_namespace)
    });
    let to = list("to").iter().any(|t| {
        matches!(s(t, "group").as_deref(), Some("") | Some("core"))
            && s(t, "kind").as_deref() == Some("Service")
            && s(t, "name").is_none_or(|n| n == service)
    });
    from && to
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{SetHeaderRoute, SetMirrorRoute};

    fn inputs() -> RouteInputs {
        RouteInputs {
            kind: RouteKind::Http,
            name: "web".into(),
            namespace: "default".into(),
            field: "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute".into(),
            takes_managed_routes: true,
            stable: "web-stable".into(),
            canary: "web-canary".into(),
            service_namespace: "default".into(),
            managed_route_names: vec!["canary-header".into(), "mirror".into()],
            rollout: "web".into(),
        }
    }

    fn route() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
            "spec": {"rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "backendRefs": [
                    {"group": "", "kind": "Service", "name": "web-stable", "port": 80, "weight": 100},
                    {"group": "", "kind": "Service", "name": "web-canary", "port": 80, "weight": 0},
                    {"group": "", "kind": "Service", "name": "legacy", "port": 80, "weight": 10}]},
                {"backendRefs": [{"name": "other", "port": 80, "weight": 1}]}
            ]}
        })
    }

    #[test]
    fn weights_only_the_two_services_of_rules_that_reference_both() {
        let out = desired_route(&route(), &inputs(), 30, 100, &ManagedRoutes::default()).unwrap();
        let refs = &out["spec"]["rules"][0]["backendRefs"];
        assert_eq!(refs[0]["weight"], 70);
        assert_eq!(refs[1]["weight"], 30);
        assert_eq!(
            refs[2]["weight"], 10,
            "a foreign backendRef keeps its weight"
        );
        assert_eq!(out["spec"]["rules"][1], route()["spec"]["rules"][1]);
        assert_eq!(observed_weight(&out, &inputs()).unwrap(), 30);
    }

    #[test]
    fn header_and_mirror_rules_go_first_and_are_recorded_then_removed() {
        let managed = ManagedRoutes {
            header_routes: vec![SetHeaderRoute {
                name: "canary-header".into(),
                match_: vec![HeaderRoutingMatch {
                    header_name: "X-Canary".into(),
                    header_value: StringMatch {
                        exact: Some("yes".into()),
                        ..Default::default()
                    },
                }],
            }],
            mirror_routes: vec![SetMirrorRoute {
                name: "mirror".into(),
                match_: vec![RouteMatch {
                    method: Some(StringMatch {
                        exact: Some("GET".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                percentage: Some(20),
            }],
        };
        let out = desired_route(&route(), &inputs(), 10, 100, &managed).unwrap();
        let rules = out["spec"]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(rules[0]["name"], "canary-header");
        assert_eq!(
            rules[0]["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"type": "Exact", "name": "X-Canary", "value": "yes"}]}])
        );
        assert_eq!(rules[0]["backendRefs"].as_array().unwrap().len(), 1);
        assert_eq!(rules[0]["backendRefs"][0]["name"], "web-canary");
        assert_eq!(rules[1]["name"], "mirror");
        assert_eq!(rules[1]["filters"][0]["requestMirror"]["percent"], 20);
        assert_eq!(
            rules[1]["filters"][0]["requestMirror"]["backendRef"]["name"],
            "web-canary"
        );
        assert_eq!(
            out["metadata"]["annotations"][MANAGED_RULES_ANNOTATION],
            "canary-header,mirror"
        );
        // Applying again is stable, and with no managed routes the rules go away.
        assert_eq!(
            desired_route(&out, &inputs(), 10, 100, &managed).unwrap(),
            out
        );
        let back = desired_route(&out, &inputs(), 10, 100, &ManagedRoutes::default()).unwrap();
        assert_eq!(back["spec"]["rules"].as_array().unwrap().len(), 2);
        assert!(
            back["metadata"]["annotations"]
                .get(MANAGED_RULES_ANNOTATION)
                .is_none()
        );
    }

    #[test]
    fn a_user_rule_named_like_a_managed_route_is_refused_not_taken() {
        let mut live = route();
        live["spec"]["rules"][1]["name"] = json!("canary-header");
        let err = desired_route(&live, &inputs(), 10, 100, &ManagedRoutes::default()).unwrap_err();
        assert!(
            err.to_string().contains("was not written by Sluice"),
            "{err}"
        );
    }

    #[test]
    fn no_rule_with_both_services_is_an_invalid_reference_naming_the_route() {
        let mut live = route();
        live["spec"]["rules"][0]["backendRefs"][1]["name"] = json!("elsewhere");
        let err = check_route(&live, &inputs()).unwrap_err();
        assert!(
            err.to_string().contains("httproute 'web' has no rule whose backendRefs reference both the stable Service 'web-stable' and the canary Service 'web-canary'"),
            "{err}"
        );
    }

    #[test]
    fn routes_in_another_namespace_match_backend_refs_by_namespace() {
        let mut i = inputs();
        i.namespace = "edge".into();
        let mut live = route();
        assert!(
            check_route(&live, &i).is_err(),
            "refs without namespace point into 'edge'"
        );
        for b in live["spec"]["rules"][0]["backendRefs"]
            .as_array_mut()
            .unwrap()
        {
            b["namespace"] = json!("default");
        }
        assert!(check_route(&live, &i).is_ok());
    }

    #[test]
    fn reference_grants_are_read_as_the_gateway_api_defines_them() {
        let grant = json!({"spec": {
            "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": "edge"}],
            "to": [{"group": "", "kind": "Service"}]
        }});
        assert!(grant_allows(&grant, RouteKind::Http, "edge", "web-stable"));
        assert!(!grant_allows(&grant, RouteKind::Grpc, "edge", "web-stable"));
        assert!(!grant_allows(
            &grant,
            RouteKind::Http,
            "other",
            "web-stable"
        ));
        let named = json!({"spec": {
            "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": "edge"}],
            "to": [{"group": "", "kind": "Service", "name": "web-stable"}]
        }});
        assert!(!grant_allows(&named, RouteKind::Http, "edge", "web-canary"));
    }
}
