//! Istio VirtualService routes (pure: select, weight, place managed routes).
//!
//! Works on the untyped JSON of the live object and returns the desired JSON; the caller turns the
//! difference into a JSON patch. Only the weights of the canary and stable destinations of the
//! selected routes change, plus Sluice's own managed routes: every other field, route and
//! destination is carried over untouched.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::TrafficError;
use crate::api::constants::MANAGED_BY_ANNOTATION;
use crate::api::rollout::{IstioTcpRoute, IstioTlsRoute, IstioVirtualService, RouteMatch};
use crate::plan::ManagedRoutes;

/// Total of Istio route weights. Istio has no `maxTrafficWeight`.
pub(crate) const ISTIO_TOTAL_WEIGHT: i32 = 100;

/// How the canary and stable destinations of a route are recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Split {
    /// Host-level: destinations whose host is the canary / stable Service (compared up to the
    /// first `.`, so `web-canary.ns.svc.cluster.local` matches `web-canary`).
    Host { canary: String, stable: String },
    /// Subset-level: destinations whose subset is the canary / stable subset of the
    /// DestinationRule.
    Subset { canary: String, stable: String },
}

/// What the router knows about one configured VirtualService.
#[derive(Debug, Clone)]
pub(crate) struct VsInputs {
    /// The `virtualService` / `virtualServices[i]` entry.
    pub config: IstioVirtualService,
    /// Rollout field of that entry, for errors.
    pub field: String,
    /// Object name (without a `.namespace` suffix).
    pub name: String,
    /// How destinations are matched.
    pub split: Split,
    /// Names listed in `trafficRouting.managedRoutes`, highest precedence first.
    pub managed_route_names: Vec<String>,
    /// Rollout name, for the managed-by annotation.
    pub rollout: String,
}

impl VsInputs {
    fn invalid(&self, message: String) -> TrafficError {
        TrafficError::InvalidReference {
            field: self.field.clone(),
            message,
        }
    }
}

fn host_matches(host: &str, service: &str) -> bool {
    host == service || host.split('.').next() == Some(service)
}

/// Which end of the split a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Canary,
    Stable,
    Other,
}

fn role(split: &Split, dest: &Value) -> Role {
    let d = dest.get("destination");
    let field = |k: &str| d.and_then(|d| d.get(k)).and_then(Value::as_str);
    match split {
        Split::Host { canary, stable } => match field("host") {
            Some(h) if host_matches(h, canary) => Role::Canary,
            Some(h) if host_matches(h, stable) => Role::Stable,
            _ => Role::Other,
        },
        Split::Subset { canary, stable } => match field("subset") {
            Some(s) if s == canary => Role::Canary,
            Some(s) if s == stable => Role::Stable,
            _ => Role::Other,
        },
    }
}

fn weight_of(dest: &Value, only: bool) -> i32 {
    match dest.get("weight").and_then(Value::as_i64) {
        Some(w) => w.clamp(0, i64::from(ISTIO_TOTAL_WEIGHT)) as i32,
        // Istio: a lone destination without a weight takes everything.
        None if only => ISTIO_TOTAL_WEIGHT,
        None => 0,
    }
}

/// Kind of route list in `spec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteKind {
    Http,
    Tls,
    Tcp,
}

impl RouteKind {
    fn key(self) -> &'static str {
        match self {
            RouteKind::Http => "http",
            RouteKind::Tls => "tls",
            RouteKind::Tcp => "tcp",
        }
    }
}

fn routes(vs: &Value, kind: RouteKind) -> &[Value] {
    vs.pointer(&format!("/spec/{}", kind.key()))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn route_name(route: &Value) -> Option<&str> {
    route.get("name").and_then(Value::as_str)
}

fn match_ports(route: &Value) -> Vec<Option<i64>> {
    route
        .get("match")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| m.get("port").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default()
}

fn tls_matches(route: &Value, sel: &IstioTlsRoute) -> bool {
    let ports = match_ports(route);
    if let Some(port) = sel.port
        && (ports.is_empty() || ports.iter().any(|p| *p != Some(port)))
    {
        return false;
    }
    if sel.sni_hosts.is_empty() {
        return true;
    }
    let hosts: BTreeSet<&str> = route
        .get("match")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("sniHosts").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let want: BTreeSet<&str> = sel.sni_hosts.iter().map(String::as_str).collect();
    hosts == want
}

fn tcp_matches(route: &Value, sel: &IstioTcpRoute) -> bool {
    let ports = match_ports(route);
    match sel.port {
        Some(port) => !ports.is_empty() && ports.iter().all(|p| *p == Some(port)),
        None => true,
    }
}

/// Indices of the routes this Rollout weights, per kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Selected {
    http: Vec<usize>,
    tls: Vec<usize>,
    tcp: Vec<usize>,
}

fn select(vs: &Value, inputs: &VsInputs) -> Result<Selected, TrafficError> {
    let cfg = &inputs.config;
    let name = &inputs.name;
    let managed: BTreeSet<&str> = inputs
        .managed_route_names
        .iter()
        .map(String::as_str)
        .collect();
    let http = routes(vs, RouteKind::Http);
    let mut sel = Selected::default();
    let nothing_configured =
        cfg.routes.is_empty() && cfg.tls_routes.is_empty() && cfg.tcp_routes.is_empty();
    if nothing_configured {
        // As in Argo Rollouts: without a selection the VirtualService must have exactly one HTTP
        // route of its own (managed routes do not count).
        let own: Vec<usize> = http
            .iter()
            .enumerate()
            .filter(|(_, r)| route_name(r).is_none_or(|n| !managed.contains(n)))
            .map(|(i, _)| i)
            .collect();
        if own.len() != 1 {
            return Err(inputs.invalid(format!(
                "virtualservice '{name}' has {} http routes; name the ones to weight in routes",
                own.len()
            )));
        }
        sel.http = own;
    }
    // As in Argo Rollouts: the named HTTP routes are looked up only in a VirtualService that has
    // an `http` section; one with TLS or TCP routes only ignores them (Argo's own e2e manifest
    // for TLS-only splitting names an HTTP route `primary` it does not have).
    let http_routes = if vs.pointer("/spec/http").is_some() {
        cfg.routes.as_slice()
    } else {
        &[]
    };
    for want in http_routes {
        if managed.contains(want.as_str()) {
            return Err(inputs.invalid(format!(
                "route '{want}' is listed in managedRoutes and cannot also be weighted"
            )));
        }
        let i = http
            .iter()
            .position(|r| route_name(r) == Some(want.as_str()))
            .ok_or_else(|| {
                inputs.invalid(format!(
                    "http route '{want}' not found in virtualservice '{name}'"
                ))
            })?;
        sel.http.push(i);
    }
    for (n, want) in cfg.tls_routes.iter().enumerate() {
        let found: Vec<usize> = routes(vs, RouteKind::Tls)
            .iter()
            .enumerate()
            .filter(|(_, r)| tls_matches(r, want))
            .map(|(i, _)| i)
            .collect();
        if found.is_empty() {
            return Err(inputs.invalid(format!(
                "tlsRoutes[{n}] (port {}, sniHosts [{}]) matches no tls route in virtualservice '{name}'",
                want.port.map_or("any".to_string(), |p| p.to_string()),
                want.sni_hosts.join(", ")
            )));
        }
        sel.tls.extend(found);
    }
    for (n, want) in cfg.tcp_routes.iter().enumerate() {
        let found: Vec<usize> = routes(vs, RouteKind::Tcp)
            .iter()
            .enumerate()
            .filter(|(_, r)| tcp_matches(r, want))
            .map(|(i, _)| i)
            .collect();
        if found.is_empty() {
            return Err(inputs.invalid(format!(
                "tcpRoutes[{n}] (port {}) matches no tcp route in virtualservice '{name}'",
                want.port.map_or("any".to_string(), |p| p.to_string())
            )));
        }
        sel.tcp.extend(found);
    }
    for list in [&mut sel.http, &mut sel.tls, &mut sel.tcp] {
        list.sort_unstable();
        list.dedup();
    }
    Ok(sel)
}

fn describe(kind: RouteKind, i: usize, route: &Value) -> String {
    match route_name(route) {
        Some(n) => format!("{} route '{n}'", kind.key()),
        None => format!("{} route {i}", kind.key()),
    }
}

/// Sets the weights of one route's destinations; fails when the route lacks the canary or stable
/// destination.
fn reweight(
    route: &mut Value,
    kind: RouteKind,
    i: usize,
    inputs: &VsInputs,
    weight: i32,
) -> Result<(), TrafficError> {
    let label = describe(kind, i, route);
    let Some(dests) = route.get_mut("route").and_then(Value::as_array_mut) else {
        return Err(inputs.invalid(format!(
            "{label} of virtualservice '{}' has no destinations",
            inputs.name
        )));
    };
    let roles: Vec<Role> = dests.iter().map(|d| role(&inputs.split, d)).collect();
    let (what, canary_name, stable_name) = match &inputs.split {
        Split::Host { canary, stable } => ("service", canary, stable),
        Split::Subset { canary, stable } => ("destinationrule subset", canary, stable),
    };
    let canary = roles
        .iter()
        .position(|r| *r == Role::Canary)
        .ok_or_else(|| {
            inputs.invalid(format!(
                "canary {what} '{canary_name}' not found in {label} of virtualservice '{}'",
                inputs.name
            ))
        })?;
    let stable = roles
        .iter()
        .position(|r| *r == Role::Stable)
        .ok_or_else(|| {
            inputs.invalid(format!(
                "stable {what} '{stable_name}' not found in {label} of virtualservice '{}'",
                inputs.name
            ))
        })?;
    // Every other destination (additional subsets, anything the user added) keeps its share; the
    // stable destination gets what is left.
    let only = dests.len() == 1;
    let others: i32 = dests
        .iter()
        .zip(&roles)
        .filter(|(_, r)| **r == Role::Other)
        .map(|(d, _)| weight_of(d, only))
        .sum();
    let canary_weight = weight.clamp(0, ISTIO_TOTAL_WEIGHT);
    let stable_weight = (ISTIO_TOTAL_WEIGHT - canary_weight - others).max(0);
    dests[canary]["weight"] = json!(canary_weight);
    dests[stable]["weight"] = json!(stable_weight);
    Ok(())
}

/// The canary weight currently configured on `vs` for the routes this Rollout weights: the highest
/// among them. `None` when there is no selected route.
pub(crate) fn observed_weight(vs: &Value, inputs: &VsInputs) -> Result<Option<i32>, TrafficError> {
    let sel = select(vs, inputs)?;
    let mut weight: Option<i32> = None;
    for (kind, list) in [
        (RouteKind::Http, &sel.http),
        (RouteKind::Tls, &sel.tls),
        (RouteKind::Tcp, &sel.tcp),
    ] {
        let all = routes(vs, kind);
        for &i in list {
            let dests = all[i].get("route").and_then(Value::as_array);
            let dests = dests.map(Vec::as_slice).unwrap_or(&[]);
            let w = dests
                .iter()
                .find(|d| role(&inputs.split, d) == Role::Canary)
                .map_or(0, |d| weight_of(d, dests.len() == 1));
            weight = Some(weight.map_or(w, |m| m.max(w)));
        }
    }
    Ok(weight)
}

fn string_match(m: &crate::api::rollout::StringMatch) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

fn header_route(
    name: &str,
    matches: &[crate::api::rollout::HeaderRoutingMatch],
    canary: &Value,
) -> Value {
    // One match block per header, as Argo Rollouts writes it.
    let matches: Vec<Value> = matches
        .iter()
        .map(|m| json!({"headers": {m.header_name.clone(): string_match(&m.header_value)}}))
        .collect();
    json!({
        "name": name,
        "match": matches,
        "route": [{"destination": canary, "weight": ISTIO_TOTAL_WEIGHT}],
    })
}

fn mirror_route(
    name: &str,
    matches: &[RouteMatch],
    percentage: Option<i32>,
    weighted: &Value,
    canary: &Value,
) -> Value {
    let matches: Vec<Value> = matches
        .iter()
        .map(|m| {
            let mut out = Map::new();
            if let Some(method) = &m.method {
                out.insert("method".into(), string_match(method));
            }
            if let Some(path) = &m.path {
                out.insert("uri".into(), string_match(path));
            }
            if !m.headers.is_empty() {
                let headers: Map<String, Value> = m
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), string_match(v)))
                    .collect();
                out.insert("headers".into(), Value::Object(headers));
            }
            Value::Object(out)
        })
        .collect();
    json!({
        "name": name,
        "match": matches,
        // The weighted route's destinations at their current weights: mirrored requests are
        // still answered by the normal split.
        "route": weighted.get("route").cloned().unwrap_or(json!([])),
        "mirror": canary,
        "mirrorPercentage": {"value": f64::from(percentage.unwrap_or(100))},
    })
}

/// The canary destination (`host`, `subset`, `port`) of a weighted route, for managed routes.
fn canary_destination(route: &Value, split: &Split) -> Option<Value> {
    let dest = route
        .get("route")?
        .as_array()?
        .iter()
        .find(|d| role(split, d) == Role::Canary)?
        .get("destination")?;
    let mut out = Map::new();
    for key in ["host", "subset", "port"] {
        if let Some(v) = dest.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    Some(Value::Object(out))
}

/// The VirtualService with the canary at `weight` and exactly the managed routes in `routes`
/// first (in `managedRoutes` order). Everything else is carried over from `live`.
pub(crate) fn desired_virtual_service(
    live: &Value,
    inputs: &VsInputs,
    weight: i32,
    managed: &ManagedRoutes,
) -> Result<Value, TrafficError> {
    let sel = select(live, inputs)?;
    let mut vs = live.clone();
    for (kind, list) in [
        (RouteKind::Http, &sel.http),
        (RouteKind::Tls, &sel.tls),
        (RouteKind::Tcp, &sel.tcp),
    ] {
        for &i in list {
            let route = vs
                .pointer_mut(&format!("/spec/{}/{i}", kind.key()))
                .ok_or_else(|| {
                    inputs.invalid(format!("virtualservice '{}' changed", inputs.name))
                })?;
            reweight(route, kind, i, inputs, weight)?;
        }
    }

    // Managed routes: built from the first weighted HTTP route, placed first in the declared
    // order; any route carrying a managed name that is not wanted now is removed.
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
    let http = routes(&vs, RouteKind::Http).to_vec();
    let mut managed_http = Vec::new();
    let wants_routes = !managed.header_routes.is_empty() || !managed.mirror_routes.is_empty();
    if wants_routes {
        let weighted = sel.http.first().map(|&i| &http[i]).ok_or_else(|| {
            inputs.invalid(format!(
                "header and mirror routes need an http route to weight in virtualservice '{}'",
                inputs.name
            ))
        })?;
        let canary = canary_destination(weighted, &inputs.split).ok_or_else(|| {
            inputs.invalid(format!(
                "no canary destination in virtualservice '{}'",
                inputs.name
            ))
        })?;
        for name in &declared {
            if let Some(h) = managed.header_routes.iter().find(|h| h.name == *name) {
                managed_http.push(header_route(name, &h.match_, &canary));
            } else if let Some(m) = managed.mirror_routes.iter().find(|m| m.name == *name) {
                managed_http.push(mirror_route(
                    name,
                    &m.match_,
                    m.percentage,
                    weighted,
                    &canary,
                ));
            }
        }
    }
    let mut new_http = managed_http;
    new_http.extend(
        http.into_iter()
            .filter(|r| route_name(r).is_none_or(|n| !declared.contains(&n))),
    );
    if let Some(spec) = vs.get_mut("spec").and_then(Value::as_object_mut)
        && (spec.contains_key("http") || !new_http.is_empty())
    {
        spec.insert("http".into(), Value::Array(new_http));
    }
    set_annotation(&mut vs, MANAGED_BY_ANNOTATION, Some(&inputs.rollout));
    Ok(vs)
}

/// The VirtualService as it should be once the Rollout is gone: all traffic to stable, no managed
/// routes, no managed-by annotation.
pub(crate) fn released_virtual_service(
    live: &Value,
    inputs: &VsInputs,
) -> Result<Value, TrafficError> {
    let mut vs = desired_virtual_service(live, inputs, 0, &ManagedRoutes::default())?;
    set_annotation(&mut vs, MANAGED_BY_ANNOTATION, None);
    Ok(vs)
}

/// Sets (or with `None` removes) an annotation on an untyped object.
pub(crate) fn set_annotation(obj: &mut Value, key: &str, value: Option<&str>) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    match value {
        Some(v) => {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(key.to_string(), Value::String(v.to_string()));
            }
        }
        None => {
            if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove(key);
                if a.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
}
