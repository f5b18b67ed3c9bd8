//! The pure half of the nginx data plane: cluster objects in, an nginx configuration out.
//!
//! Ingresses (with ingress-nginx's canary annotations) are served on the ingress port, matched by
//! `Host` and path. VirtualServices (routes with weights, subsets from DestinationRules, header
//! matches) are served on the mesh port, matched by `Host` against the VirtualService's `hosts`.
//! HTTPRoutes are served on the gateway port (see [`gateway`]).
//!
//! Every backend (a Service, or a Service subset) gets an internal server on a unix socket that
//! round-robins over its ready pods' ports. A route's split is a weighted upstream over those
//! sockets with `worker_processes 1`, so nginx's smooth weighted round robin sends exactly the
//! configured share (not a random sample of it). The access log names the backend that answered,
//! which is how the metrics get their `service`/`canary`/`destination_*` labels.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

mod gateway;

/// Annotation prefix of ingress-nginx.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io";

/// One ready endpoint: pod name, loopback port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub pod: String,
    pub port: u16,
}

/// Everything the configuration is rendered from.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub ingresses: Vec<Value>,
    pub virtual_services: Vec<Value>,
    pub destination_rules: Vec<Value>,
    /// `gateway.networking.k8s.io/v1` HTTPRoutes.
    pub http_routes: Vec<Value>,
    /// ReferenceGrants (any served version: the fields read are the same).
    pub reference_grants: Vec<Value>,
    /// (namespace, name) of every Service.
    pub services: BTreeSet<(String, String)>,
    /// (namespace, service) -> ready endpoints.
    pub endpoints: BTreeMap<(String, String), Vec<Endpoint>>,
    /// (namespace, pod) -> labels.
    pub pod_labels: BTreeMap<(String, String), BTreeMap<String, String>>,
}

/// A backend: a Service, optionally restricted to a subset's labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub subset: Option<String>,
    /// A Gateway API backendRef that cannot be used (no such Service, no ReferenceGrant for
    /// it...): its share of requests is answered with 500.
    pub invalid: bool,
}

impl Backend {
    /// The name written in the access log.
    pub fn log_name(&self) -> String {
        match &self.subset {
            Some(s) => format!("{}/{}/{s}", self.namespace, self.service),
            None => format!("{}/{}", self.namespace, self.service),
        }
    }
}

/// Numbers backends stably across renders, so socket paths keep their meaning.
#[derive(Debug, Default)]
pub struct BackendIds {
    ids: BTreeMap<Backend, usize>,
}

impl BackendIds {
    fn id(&mut self, b: &Backend) -> usize {
        let next = self.ids.len();
        *self.ids.entry(b.clone()).or_insert(next)
    }
}

/// Ports of the rendered configuration.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub ingress: u16,
    pub mesh: u16,
    /// Where HTTPRoutes are served (one listener of one Gateway).
    pub gateway: u16,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn annotation<'a>(ing: &'a Value, key: &str) -> Option<&'a str> {
    ing.pointer("/metadata/annotations")
        .and_then(|a| a.get(format!("{NGINX_PREFIX}/{key}")))
        .and_then(Value::as_str)
}

/// nginx string literal.
fn quote(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
    )
}

/// `$http_x_canary` for header `X-Canary`.
fn header_var(h: &str) -> String {
    format!(
        "$http_{}",
        h.to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    )
}

fn cookie_var(c: &str) -> String {
    format!(
        "$cookie_{}",
        c.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    )
}

/// One path rule of an Ingress: host, path, path type, backend service.
struct PathRule {
    host: String,
    path: String,
    exact: bool,
    service: String,
}

fn path_rules(ing: &Value) -> Vec<PathRule> {
    let mut out = Vec::new();
    for rule in ing
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(PathRule {
                host: s(rule, "/host").to_string(),
                path: match s(p, "/path") {
                    "" => "/".to_string(),
                    x => x.to_string(),
                },
                exact: s(p, "/pathType") == "Exact",
                service: s(p, "/backend/service/name").to_string(),
            });
        }
    }
    out
}

fn is_canary(ing: &Value) -> bool {
    annotation(ing, "canary") == Some("true")
}

/// A route's targets with weights, rendered as an upstream.
struct Split {
    name: String,
    targets: Vec<(Backend, u32)>,
}

/// Location-level routing: ordered overrides (`if` condition -> split name), default split.
struct Location {
    server_name: String,
    port: u16,
    path: String,
    exact: bool,
    vars: Vec<(&'static str, String)>,
    default_route: Option<String>,
    /// Evaluated in order; a later match wins, so callers push the strongest rule last.
    overrides: Vec<(String, String)>,
}

struct Renderer<'a> {
    model: &'a Model,
    ports: Ports,
    /// http-level directives of the HTTPRoutes (the maps of their matches).
    gateway_http: String,
    /// The gateway port's servers.
    gateway_servers: String,
    ids: &'a mut BackendIds,
    dir: &'a Path,
    splits: Vec<Split>,
    locations: Vec<Location>,
    backends: BTreeSet<Backend>,
}

impl Renderer<'_> {
    fn split(&mut self, name: String, targets: Vec<(Backend, u32)>) -> String {
        for (b, _) in &targets {
            self.ids.id(b);
            self.backends.insert(b.clone());
        }
        self.splits.push(Split {
            name: name.clone(),
            targets,
        });
        name
    }

    fn ingresses(&mut self, port: u16) {
        let mut taken = BTreeSet::new();
        let model = self.model;
        let mut stable: Vec<&Value> = model.ingresses.iter().filter(|i| !is_canary(i)).collect();
        stable.sort_by_key(|i| (s(i, "/metadata/namespace"), s(i, "/metadata/name")));
        for (n, ing) in stable.iter().enumerate() {
            let ns = s(ing, "/metadata/namespace");
            let name = s(ing, "/metadata/name");
            for (p, rule) in path_rules(ing).into_iter().enumerate() {
                if !taken.insert((rule.host.clone(), rule.path.clone(), rule.exact)) {
                    continue;
                }
                let stable_backend = Backend {
                    namespace: ns.to_string(),
                    service: rule.service.clone(),
                    subset: None,
                    invalid: false,
                };
                // The canary Ingress for the same host and path, in the same namespace.
                let canary = model.ingresses.iter().find_map(|c| {
                    if !is_canary(c) || s(c, "/metadata/namespace") != ns {
                        return None;
                    }
                    path_rules(c)
                        .into_iter()
                        .find(|r| r.host == rule.host && r.path == rule.path)
                        .map(|r| (c, r.service))
                });
                let prefix = format!("ing_{n}_{p}");
                let stable_route = self.split(
                    format!("{prefix}_stable"),
                    vec![(stable_backend.clone(), 1)],
                );
                let mut loc = Location {
                    server_name: rule.host.clone(),
                    port,
                    path: rule.path.clone(),
                    exact: rule.exact,
                    vars: vec![
                        ("sl_kind", "ing".to_string()),
                        ("sl_namespace", ns.to_string()),
                        ("sl_ingress", name.to_string()),
                        ("sl_service", rule.service.clone()),
                        ("sl_canary_service", String::new()),
                    ],
                    default_route: Some(stable_route.clone()),
                    overrides: Vec::new(),
                };
                if let Some((c, canary_service)) = canary {
                    let canary_backend = Backend {
                        namespace: ns.to_string(),
                        service: canary_service.clone(),
                        subset: None,
                        invalid: false,
                    };
                    loc.vars[4].1 = canary_service.clone();
                    let canary_route = self.split(
                        format!("{prefix}_canary"),
                        vec![(canary_backend.clone(), 1)],
                    );
                    let total = annotation(c, "canary-weight-total")
                        .and_then(|t| t.parse::<u32>().ok())
                        .filter(|t| *t > 0)
                        .unwrap_or(100);
                    let weight = annotation(c, "canary-weight")
                        .and_then(|w| w.parse::<u32>().ok())
                        .unwrap_or(0)
                        .min(total);
                    let mut targets = Vec::new();
                    if weight > 0 {
                        targets.push((canary_backend, weight));
                    }
                    if total > weight {
                        targets.push((stable_backend, total - weight));
                    }
                    loc.default_route = Some(self.split(format!("{prefix}_split"), targets));
                    // ingress-nginx precedence: header, then cookie, then weight.
                    if let Some(cookie) = annotation(c, "canary-by-cookie") {
                        let v = cookie_var(cookie);
                        loc.overrides
                            .push((format!("{v} = \"never\""), stable_route.clone()));
                        loc.overrides
                            .push((format!("{v} = \"always\""), canary_route.clone()));
                    }
                    if let Some(header) = annotation(c, "canary-by-header") {
                        let v = header_var(header);
                        if let Some(value) = annotation(c, "canary-by-header-value") {
                            loc.overrides
                                .push((format!("{v} = {}", quote(value)), canary_route.clone()));
                        } else if let Some(pattern) = annotation(c, "canary-by-header-pattern") {
                            loc.overrides
                                .push((format!("{v} ~ {}", quote(pattern)), canary_route.clone()));
                        } else {
                            loc.overrides
                                .push((format!("{v} = \"never\""), stable_route.clone()));
                            loc.overrides
                                .push((format!("{v} = \"always\""), canary_route.clone()));
                        }
                    }
                }
                self.locations.push(loc);
            }
        }
    }

    fn destination(&self, vs_ns: &str, dest: &Value) -> Backend {
        let host = s(dest, "/host");
        let mut parts = host.split('.');
        let service = parts.next().unwrap_or_default().to_string();
        let namespace = parts.next().unwrap_or(vs_ns).to_string();
        let subset = dest
            .get("subset")
            .and_then(Value::as_str)
            .map(str::to_string);
        Backend {
            namespace,
            service,
            subset,
            invalid: false,
        }
    }

    fn virtual_services(&mut self, port: u16) {
        let model = self.model;
        let mut taken = BTreeSet::new();
        for (n, vs) in model.virtual_services.iter().enumerate() {
            let ns = s(vs, "/metadata/namespace");
            let name = s(vs, "/metadata/name");
            let hosts: Vec<String> = vs
                .pointer("/spec/hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|h| taken.insert(h.to_string()))
                .map(str::to_string)
                .collect();
            let routes: Vec<&Value> = vs
                .pointer("/spec/http")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            let mut default_route = None;
            let mut overrides = Vec::new();
            for (i, route) in routes.iter().enumerate() {
                let mut targets: Vec<(Backend, u32)> = Vec::new();
                let dests: Vec<&Value> = route
                    .get("route")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .collect();
                for d in &dests {
                    let w = d
                        .get("weight")
                        .and_then(Value::as_u64)
                        .unwrap_or(if dests.len() == 1 { 100 } else { 0 });
                    if w > 0 {
                        let b = self.destination(ns, d.get("destination").unwrap_or(&Value::Null));
                        targets.push((b, w as u32));
                    }
                }
                if targets.is_empty() {
                    continue;
                }
                let split = self.split(format!("vs_{n}_{i}"), targets);
                let matches: Vec<&Value> = route
                    .get("match")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .collect();
                if matches.is_empty() {
                    if default_route.is_none() {
                        default_route = Some(split);
                    }
                    continue;
                }
                // First matching route wins: earlier routes are pushed later (a later `if`
                // overrides). One header condition per match is supported.
                for m in matches {
                    let Some((header, cond)) = m
                        .get("headers")
                        .and_then(Value::as_object)
                        .and_then(|h| h.iter().next())
                    else {
                        continue;
                    };
                    let var = header_var(header);
                    let test = if let Some(v) = cond.get("exact").and_then(Value::as_str) {
                        format!("{var} = {}", quote(v))
                    } else if let Some(v) = cond.get("prefix").and_then(Value::as_str) {
                        format!(
                            "{var} ~ {}",
                            gateway::quote_raw(&format!("^{}", regex::escape(v)))
                        )
                    } else if let Some(v) = cond.get("regex").and_then(Value::as_str) {
                        format!("{var} ~ {}", gateway::quote_raw(&format!("^(?:{v})$")))
                    } else {
                        continue;
                    };
                    overrides.insert(0, (test, split.clone()));
                }
            }
            for host in hosts {
                self.locations.push(Location {
                    server_name: host,
                    port,
                    path: "/".to_string(),
                    exact: false,
                    vars: vec![
                        ("sl_kind", "vs".to_string()),
                        ("sl_namespace", ns.to_string()),
                        ("sl_ingress", name.to_string()),
                        ("sl_service", String::new()),
                        ("sl_canary_service", String::new()),
                    ],
                    default_route: default_route.clone(),
                    overrides: overrides.clone(),
                });
            }
        }
    }

    fn subset_labels(&self, b: &Backend) -> Option<BTreeMap<String, String>> {
        let subset = b.subset.as_ref()?;
        self.model.destination_rules.iter().find_map(|dr| {
            let host = s(dr, "/spec/host").split('.').next().unwrap_or_default();
            let ns = s(dr, "/metadata/namespace");
            if host != b.service || ns != b.namespace {
                return None;
            }
            dr.pointer("/spec/subsets")
                .and_then(Value::as_array)?
                .iter()
                .find(|x| s(x, "/name") == subset)
                .map(|x| {
                    x.get("labels")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
        })
    }

    fn endpoints(&self, b: &Backend) -> Vec<u16> {
        let all = self
            .model
            .endpoints
            .get(&(b.namespace.clone(), b.service.clone()))
            .cloned()
            .unwrap_or_default();
        if b.subset.is_none() {
            return all.iter().map(|e| e.port).collect();
        }
        // An unknown subset has no endpoints (Istio answers 503 "no healthy upstream").
        let Some(labels) = self.subset_labels(b) else {
            return Vec::new();
        };
        all.iter()
            .filter(|e| {
                let pod = self
                    .model
                    .pod_labels
                    .get(&(b.namespace.clone(), e.pod.clone()));
                labels
                    .iter()
                    .all(|(k, v)| pod.and_then(|p| p.get(k)) == Some(v))
            })
            .map(|e| e.port)
            .collect()
    }

    fn socket(&mut self, b: &Backend) -> String {
        let id = self.ids.id(b);
        format!("{}/b{id}.sock", self.dir.display())
    }

    fn finish(mut self, ports: Ports, root: bool) -> String {
        let dir = self.dir.display().to_string();
        let mut out = String::new();
        let _ = writeln!(out, "# rendered by sluice-e2e; do not edit");
        if root {
            out.push_str("user root;\n");
        }
        let _ = write!(
            out,
            "worker_processes 1;\ndaemon off;\nmaster_process on;\npid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n\
             \x20 access_log off;\n  client_body_temp_path {dir}/tmp-body;\n  proxy_temp_path {dir}/tmp-proxy;\n\
             \x20 fastcgi_temp_path {dir}/tmp-fastcgi;\n  uwsgi_temp_path {dir}/tmp-uwsgi;\n  scgi_temp_path {dir}/tmp-scgi;\n\
             \x20 proxy_http_version 1.1;\n  proxy_set_header Connection \"\";\n  proxy_next_upstream off;\n\
             \x20 proxy_connect_timeout 2s;\n  proxy_read_timeout 30s;\n  server_names_hash_bucket_size 128;\n\
             \x20 variables_hash_bucket_size 128;\n\
             \x20 log_format sluice escape=none '$sl_kind|$sl_namespace|$sl_ingress|$sl_service|$sl_canary_service|$sl_backend|$status|$request_time|$upstream_http_x_version|$upstream_http_x_workload|$msec';\n\
             \x20 log_format sluice_gw escape=none 'gw|$http_x_sluice_route|$sl_gw_backend|$status|$request_time|$upstream_http_x_version|$upstream_http_x_workload|$msec';\n\
             \x20 proxy_set_header X-Sluice-Route \"\";\n"
        );
        out.push_str(&self.gateway_http);
        // Backend name in the access log, from the socket that answered.
        // Every backend ever rendered keeps its server: on a reload nginx deletes the unix
        // socket of a server that is gone, and the old worker, still answering the requests it
        // accepted before the reload, would fail to connect to it (a 502 when a weight drops to
        // 0 and the backend leaves the split).
        let backends: Vec<Backend> = self
            .backends
            .iter()
            .chain(self.ids.ids.keys())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        out.push_str("  map $upstream_addr $sl_backend {\n    default \"\";\n");
        for b in &backends {
            let sock = self.socket(b);
            let _ = writeln!(out, "    \"unix:{sock}\" {};", quote(&b.log_name()));
        }
        out.push_str("  }\n");
        // Internal servers: one per backend, round robin over its ready pods.
        for b in &backends {
            let id = self.ids.id(b);
            let sock = self.socket(b);
            if *b == gateway::discard() {
                let _ = writeln!(
                    out,
                    "  server {{\n    listen unix:{sock};\n    location / {{ return 204; }}\n  }}"
                );
                continue;
            }
            // Requests sent by an HTTPRoute rule (main or mirrored) are logged here, where the
            // backend is known; the header says which route and rule sent them.
            let gw_log = format!(
                "set $sl_gw_backend {};\n      access_log {dir}/access.log sluice_gw if=$http_x_sluice_route;",
                quote(&b.log_name())
            );
            if b.invalid {
                let _ = writeln!(
                    out,
                    "  server {{\n    listen unix:{sock};\n    location / {{\n      {gw_log}\n      return 500;\n    }}\n  }}"
                );
                continue;
            }
            let ports_of = self.endpoints(b);
            let _ = writeln!(out, "  upstream pods_{id} {{");
            if ports_of.is_empty() {
                // No ready pod: connection refused, answered as 502.
                out.push_str("    server 127.0.0.1:1;\n");
            }
            for p in ports_of {
                let _ = writeln!(out, "    server 127.0.0.1:{p} max_fails=0;");
            }
            out.push_str("  }\n");
            let _ = writeln!(
                out,
                "  server {{\n    listen unix:{sock};\n    location / {{\n      {gw_log}\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Sluice-Route \"\";\n      proxy_pass http://pods_{id};\n    }}\n  }}"
            );
        }
        let splits = std::mem::take(&mut self.splits);
        for split in &splits {
            let _ = writeln!(out, "  upstream {} {{", split.name);
            for (b, w) in &split.targets {
                let sock = self.socket(b);
                let _ = writeln!(out, "    server unix:{sock} weight={w} max_fails=0;");
            }
            out.push_str("  }\n");
        }
        // Outer servers, grouped by (port, host).
        let mut servers: BTreeMap<(u16, String), Vec<&Location>> = BTreeMap::new();
        for l in &self.locations {
            servers
                .entry((l.port, l.server_name.clone()))
                .or_default()
                .push(l);
        }
        for port in [ports.ingress, ports.mesh] {
            let _ = writeln!(
                out,
                "  server {{\n    listen 127.0.0.1:{port} default_server;\n    server_name _;\n    \
                 set $sl_kind \"\"; set $sl_namespace \"\"; set $sl_ingress \"\"; set $sl_service \"\";\n    \
                 set $sl_canary_service \"\"; set $sl_route \"\"; set $sl_gw_backend \"\";\n    return 404;\n  }}"
            );
        }
        for ((port, host), locs) in servers {
            let host = if host.is_empty() { "_" } else { &host };
            let _ = writeln!(
                out,
                "  server {{\n    listen 127.0.0.1:{port};\n    server_name {host};"
            );
            for l in locs {
                let m = if l.exact { "= " } else { "" };
                let _ = writeln!(out, "    location {m}{} {{", l.path);
                for (k, v) in &l.vars {
                    let _ = writeln!(out, "      set ${k} {};", quote(v));
                }
                let _ = writeln!(
                    out,
                    "      set $sl_route {};",
                    quote(l.default_route.as_deref().unwrap_or(""))
                );
                for (cond, route) in &l.overrides {
                    let _ = writeln!(out, "      if ({cond}) {{ set $sl_route {route}; }}");
                }
                out.push_str("      if ($sl_route = \"\") { return 404; }\n");
                let _ = writeln!(out, "      access_log {dir}/access.log sluice;");
                out.push_str("      proxy_pass http://$sl_route;\n    }\n");
            }
            out.push_str("  }\n");
        }
        out.push_str(&self.gateway_servers);
        out.push_str("}\n");
        out
    }
}

/// Renders the whole nginx configuration.
pub fn render(model: &Model, ids: &mut BackendIds, dir: &Path, ports: Ports, root: bool) -> String {
    let mut r = Renderer {
        model,
        ports,
        gateway_http: String::new(),
        gateway_servers: String::new(),
        ids,
        dir,
        splits: Vec::new(),
        locations: Vec::new(),
        backends: BTreeSet::new(),
    };
    r.ingresses(ports.ingress);
    r.virtual_services(ports.mesh);
    r.http_routes();
    r.finish(ports, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(name: &str, service: &str, ann: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "annotations": ann},
            "spec": {"rules": [{"host": "web.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}})
    }

    fn model() -> Model {
        let mut m = Model::default();
        m.endpoints.insert(
            ("default".into(), "web-stable".into()),
            vec![Endpoint {
                pod: "a".into(),
                port: 1001,
            }],
        );
        m.endpoints.insert(
            ("default".into(), "web-canary".into()),
            vec![Endpoint {
                pod: "b".into(),
                port: 1002,
            }],
        );
        m
    }

    const PORTS: Ports = Ports {
        ingress: 8000,
        mesh: 8001,
        gateway: 8002,
    };

    #[test]
    fn canary_weight_becomes_upstream_weights() {
        let mut m = model();
        m.ingresses.push(ingress("web", "web-stable", json!({})));
        m.ingresses.push(ingress(
            "web-web-canary",
            "web-canary",
            json!({"nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "25",
                   "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary"}),
        ));
        let conf = render(
            &m,
            &mut BackendIds::default(),
            Path::new("/d"),
            PORTS,
            false,
        );
        assert!(conf.contains("upstream ing_0_0_split {\n    server unix:/d/b1.sock weight=25 max_fails=0;\n    server unix:/d/b0.sock weight=75 max_fails=0;"), "{conf}");
        assert!(conf.contains("server 127.0.0.1:1001"), "{conf}");
        assert!(conf.contains("server 127.0.0.1:1002"), "{conf}");
        assert!(
            conf.contains("if ($http_x_canary = \"always\") { set $sl_route ing_0_0_canary; }"),
            "{conf}"
        );
    }

    #[test]
    fn weight_zero_sends_nothing_to_the_canary_and_total_is_honoured() {
        let mut m = model();
        m.ingresses.push(ingress("web", "web-stable", json!({})));
        m.ingresses.push(ingress(
            "c",
            "web-canary",
            json!({"nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "0"}),
        ));
        let conf = render(
            &m,
            &mut BackendIds::default(),
            Path::new("/d"),
            PORTS,
            false,
        );
        assert!(
            conf.contains(
                "upstream ing_0_0_split {\n    server unix:/d/b0.sock weight=100 max_fails=0;\n  }"
            ),
            "{conf}"
        );
        let mut m = model();
        m.ingresses.push(ingress("web", "web-stable", json!({})));
        m.ingresses.push(ingress(
            "c",
            "web-canary",
            json!({"nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-weight": "30",
                   "nginx.ingress.kubernetes.io/canary-weight-total": "1000"}),
        ));
        let conf = render(
            &m,
            &mut BackendIds::default(),
            Path::new("/d"),
            PORTS,
            false,
        );
        assert!(
            conf.contains("weight=30 max_fails=0;\n    server unix:/d/b0.sock weight=970"),
            "{conf}"
        );
    }

    #[test]
    fn virtual_service_subsets_select_pods_by_label() {
        let mut m = Model::default();
        m.endpoints.insert(
            ("default".into(), "web".into()),
            vec![
                Endpoint {
                    pod: "a".into(),
                    port: 1001,
                },
                Endpoint {
                    pod: "b".into(),
                    port: 1002,
                },
            ],
        );
        m.pod_labels.insert(
            ("default".into(), "a".into()),
            [("h".to_string(), "1".to_string())].into(),
        );
        m.pod_labels.insert(
            ("default".into(), "b".into()),
            [("h".to_string(), "2".to_string())].into(),
        );
        m.destination_rules.push(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"host": "web", "subsets": [{"name": "stable", "labels": {"h": "1"}}, {"name": "canary", "labels": {"h": "2"}}]}}));
        m.virtual_services.push(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"hosts": ["web"], "http": [
                {"name": "hdr", "match": [{"headers": {"x-canary": {"exact": "yes"}}}], "route": [{"destination": {"host": "web", "subset": "canary"}}]},
                {"name": "primary", "route": [{"destination": {"host": "web", "subset": "stable"}, "weight": 90},
                                              {"destination": {"host": "web", "subset": "canary"}, "weight": 10}]}]}}));
        let conf = render(
            &m,
            &mut BackendIds::default(),
            Path::new("/d"),
            PORTS,
            false,
        );
        assert!(conf.contains("upstream vs_0_1 {\n    server unix:/d/b1.sock weight=90 max_fails=0;\n    server unix:/d/b0.sock weight=10"), "{conf}");
        assert!(
            conf.contains("upstream pods_1 {\n    server 127.0.0.1:1001"),
            "{conf}"
        );
        assert!(
            conf.contains("upstream pods_0 {\n    server 127.0.0.1:1002"),
            "{conf}"
        );
        assert!(
            conf.contains("if ($http_x_canary = \"yes\") { set $sl_route vs_0_0; }"),
            "{conf}"
        );
    }

    /// A regex is quoted without escaping `$`: nginx passes `\$` to PCRE, where it is a literal
    /// dollar, so `^(?:x)\$` would never match.
    #[test]
    fn virtual_service_regex_and_prefix_headers_keep_their_anchors() {
        let mut m = model();
        m.virtual_services.push(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"hosts": ["web"], "http": [
                {"match": [{"headers": {"x-a": {"regex": "a.*"}}}], "route": [{"destination": {"host": "web-canary"}}]},
                {"match": [{"headers": {"x-b": {"prefix": "$b"}}}], "route": [{"destination": {"host": "web-canary"}}]},
                {"route": [{"destination": {"host": "web-stable"}}]}]}}));
        let conf = render(
            &m,
            &mut BackendIds::default(),
            Path::new("/d"),
            PORTS,
            false,
        );
        assert!(conf.contains("if ($http_x_a ~ \"^(?:a.*)$\")"), "{conf}");
        assert!(conf.contains("if ($http_x_b ~ \"^\\\\$b\")"), "{conf}");
    }
}
