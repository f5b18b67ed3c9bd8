//! HTTPRoutes (`gateway.networking.k8s.io/v1`) rendered to nginx the way NGINX Gateway Fabric
//! does it: one `server` per hostname on the gateway port, one `location` per distinct path, and
//! per route rule an internal (named) location that proxies to the rule's weighted upstream and
//! carries the rule's filters (`RequestMirror` becomes nginx's `mirror`).
//!
//! Which rule a request takes is decided in its path's `location` by the Gateway API precedence
//! (hostname, then exact path, longest prefix, method, most header matches, most query matches,
//! oldest route, route name, rule order): the candidates are tested strongest first and the first
//! that holds jumps to its rule (`error_page 418 = @rule; return 418;`, the nginx idiom for a
//! conditional jump to a named location). NGINX Gateway Fabric makes the same choice in njs; plain
//! nginx has no `&&`, so the conditions of a match are chained through `map`s, each one
//! prefixing the next one's input with `Y:`/`N:`.
//!
//! Backends that cannot be used (a Service that does not exist, a Service in another namespace
//! without a `ReferenceGrant` allowing it, a kind other than Service, no port) get their share of
//! the rule's requests answered with 500, as the Gateway API requires; a rule without usable
//! weights answers 500 to all of them.
//!
//! Weights are exact, as elsewhere in this renderer: a weighted upstream with one worker process.
//! A mirror's percentage is exact too: the mirror's subrequest goes to an upstream of the mirror
//! backend (weight: the percentage) and a server that discards it (weight: the rest).
//!
//! Requests are logged where they reach a backend's internal server, main and mirrored ones
//! alike, from the `X-Sluice-Route` header the rule's location sets (kind/namespace/name/rule):
//! that is how the metrics know route, rule and backend without sharing variables between a
//! request and its mirror.
//!
//! Not rendered: `parentRefs` (every HTTPRoute is served on the one gateway port; there are no
//! Gateway objects in the test cluster), `RegularExpression` paths, and filters other than
//! `RequestMirror` (ignored).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;

use super::{Backend, Renderer, s};

const GROUP: &str = "gateway.networking.k8s.io";

/// A match's path, normalized (a prefix has no trailing `/`, except `/` itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

/// An nginx location the matches are grouped by: `location = x` or `location x` (x ends in `/`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Loc {
    Exact(String),
    Prefix(String),
}

/// Whether prefix `v` (normalized) matches request path `p` (Gateway API: by path elements).
fn prefix_covers(v: &str, p: &str) -> bool {
    v == "/" || p == v || p.starts_with(&format!("{v}/"))
}

impl PathMatch {
    fn covers(&self, loc: &Loc) -> bool {
        match (self, loc) {
            (PathMatch::Exact(v), Loc::Exact(x)) => v == x,
            (PathMatch::Exact(_), Loc::Prefix(_)) => false,
            (PathMatch::Prefix(v), Loc::Exact(x) | Loc::Prefix(x)) => prefix_covers(v, x),
        }
    }

    fn locations(&self) -> Vec<Loc> {
        match self {
            PathMatch::Exact(v) => vec![Loc::Exact(v.clone())],
            PathMatch::Prefix(v) if v == "/" => vec![Loc::Prefix("/".into())],
            PathMatch::Prefix(v) => vec![Loc::Prefix(format!("{v}/")), Loc::Exact(v.clone())],
        }
    }

    /// Precedence within a hostname: exact before prefix, longer prefix first.
    fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            PathMatch::Exact(_) => (0, std::cmp::Reverse(0)),
            PathMatch::Prefix(v) => (1, std::cmp::Reverse(v.len())),
        }
    }
}

/// One condition of a match: an nginx variable and the full-match regex its value must match.
#[derive(Debug, Clone)]
struct Cond {
    source: String,
    regex: String,
}

/// One `matches[]` entry of one rule, with what orders it against the others.
#[derive(Debug, Clone)]
struct Candidate {
    path: PathMatch,
    conds: Vec<Cond>,
    method: bool,
    headers: usize,
    queries: usize,
    route: usize,
    rule: usize,
    index: usize,
}

impl Candidate {
    fn id(&self) -> String {
        format!("{}_{}_{}", self.route, self.rule, self.index)
    }
}

/// A route's hostname relation to a server's `server_name`: lower sorts first (wins).
type HostRank = (u8, std::cmp::Reverse<usize>);

fn host_rank(server: &str, route_hosts: &[String]) -> Option<HostRank> {
    if route_hosts.is_empty() {
        return Some((2, std::cmp::Reverse(0)));
    }
    if server.is_empty() {
        return None;
    }
    let mut best: Option<HostRank> = None;
    for h in route_hosts {
        let rank = if h == server {
            // An exact hostname, or the same wildcard as the server's.
            (u8::from(h.starts_with("*.")), std::cmp::Reverse(h.len()))
        } else if let Some(suffix) = h.strip_prefix('*')
            && !server.starts_with("*.")
            && server.len() > suffix.len()
            && server.ends_with(suffix)
        {
            (1, std::cmp::Reverse(h.len()))
        } else {
            continue;
        };
        best = Some(best.map_or(rank, |b| b.min(rank)));
    }
    best
}

/// An nginx string literal for a regex or path: only `"` and `\` are special inside quotes.
pub(super) fn quote_raw(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn name_var(prefix: &str, name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| {
        format!(
            "${prefix}{}",
            name.to_ascii_lowercase()
                .chars()
                .map(|c| if c == '-' { '_' } else { c })
                .collect::<String>()
        )
    })
}

/// Full-match regex for a Gateway API string match (`Exact`, the default, or
/// `RegularExpression`).
fn value_regex(m: &Value) -> String {
    let value = s(m, "/value");
    match s(m, "/type") {
        "RegularExpression" => format!("(?:{value})"),
        _ => regex::escape(value),
    }
}

/// The conditions of one match, or `None` when it can never be rendered (a regex path, a
/// header or query name nginx cannot address).
fn conditions(m: &Value) -> Option<(PathMatch, Vec<Cond>, bool, usize, usize)> {
    let path = match (
        s(m, "/path/type"),
        m.pointer("/path/value").and_then(Value::as_str),
    ) {
        ("RegularExpression", _) => return None,
        ("Exact", v) => PathMatch::Exact(v.unwrap_or("/").to_string()),
        (_, v) => {
            let v = v.unwrap_or("/");
            let trimmed = v.trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
        }
    };
    let mut conds = Vec::new();
    let method = m.get("method").and_then(Value::as_str);
    if let Some(method) = method {
        conds.push(Cond {
            source: "$request_method".into(),
            regex: regex::escape(method),
        });
    }
    let headers: Vec<&Value> = m
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    for h in &headers {
        conds.push(Cond {
            source: name_var("http_", s(h, "/name"))?,
            regex: value_regex(h),
        });
    }
    let queries: Vec<&Value> = m
        .get("queryParams")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    for q in &queries {
        conds.push(Cond {
            source: name_var("arg_", s(q, "/name"))?,
            regex: value_regex(q),
        });
    }
    Some((path, conds, method.is_some(), headers.len(), queries.len()))
}

/// A route as rendered: its position in precedence order, hostnames, and per rule its named
/// location's body.
struct Route {
    hosts: Vec<String>,
    candidates: Vec<Candidate>,
    /// Rule index -> the text of its named location and mirror locations.
    rules: BTreeMap<usize, String>,
}

impl Renderer<'_> {
    /// The Backend a `backendRef` of a route in `route_ns` resolves to; `invalid` when the
    /// Gateway API says its requests get a 500.
    fn backend_ref(&self, route_ns: &str, kind: &str, r: &Value) -> Backend {
        let service = s(r, "/name").to_string();
        let namespace = match s(r, "/namespace") {
            "" => route_ns.to_string(),
            ns => ns.to_string(),
        };
        let is_service =
            matches!(s(r, "/group"), "" | "core") && matches!(s(r, "/kind"), "" | "Service");
        let exists = self
            .model
            .services
            .contains(&(namespace.clone(), service.clone()));
        let permitted =
            namespace == route_ns || self.reference_granted(route_ns, kind, &namespace, &service);
        let valid = is_service && r.get("port").is_some() && exists && permitted;
        Backend {
            namespace,
            service,
            subset: None,
            invalid: !valid,
        }
    }

    /// Whether a ReferenceGrant in `to_ns` lets routes of `kind` in `from_ns` use Service `name`.
    fn reference_granted(&self, from_ns: &str, kind: &str, to_ns: &str, name: &str) -> bool {
        self.model.reference_grants.iter().any(|g| {
            s(g, "/metadata/namespace") == to_ns
                && g.pointer("/spec/from")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|f| {
                        s(f, "/group") == GROUP
                            && s(f, "/kind") == kind
                            && s(f, "/namespace") == from_ns
                    })
                && g.pointer("/spec/to")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|t| {
                        s(t, "/group").is_empty()
                            && s(t, "/kind") == "Service"
                            && (s(t, "/name").is_empty() || s(t, "/name") == name)
                    })
        })
    }

    fn route_header(&self, route_ns: &str, route_name: &str, rule: &str) -> String {
        format!("HTTPRoute/{route_ns}/{route_name}/{rule}")
    }

    pub(super) fn http_routes(&mut self) {
        let model = self.model;
        let mut routes: Vec<&Value> = model.http_routes.iter().collect();
        // Gateway API: on a tie, the oldest route wins, then the first by namespace/name.
        routes.sort_by_key(|r| {
            (
                s(r, "/metadata/creationTimestamp").to_string(),
                s(r, "/metadata/namespace").to_string(),
                s(r, "/metadata/name").to_string(),
            )
        });
        let mut rendered = Vec::new();
        for (n, route) in routes.iter().enumerate() {
            let ns = s(route, "/metadata/namespace");
            let name = s(route, "/metadata/name");
            let hosts: Vec<String> = route
                .pointer("/spec/hostnames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect();
            let mut out = Route {
                hosts,
                candidates: Vec::new(),
                rules: BTreeMap::new(),
            };
            let rules: Vec<&Value> = route
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .collect();
            for (i, rule) in rules.iter().enumerate() {
                let rule_name = match s(rule, "/name") {
                    "" => i.to_string(),
                    x => x.to_string(),
                };
                let header = self.route_header(ns, name, &rule_name);
                // Weighted upstream of the rule; unusable backends keep their share as 500s.
                let mut targets: Vec<(Backend, u32)> = Vec::new();
                for r in rule
                    .get("backendRefs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let w = r.get("weight").and_then(Value::as_u64).unwrap_or(1);
                    if w > 0 {
                        let b = self.backend_ref(ns, "HTTPRoute", r);
                        targets.push((b, u32::try_from(w).unwrap_or(u32::MAX)));
                    }
                }
                if targets.is_empty() {
                    targets.push((
                        Backend {
                            namespace: ns.to_string(),
                            service: String::new(),
                            subset: None,
                            invalid: true,
                        },
                        1,
                    ));
                }
                let split = self.split(format!("gw_{n}_{i}"), targets);
                let mut body = String::new();
                let mut mirrors = String::new();
                let _ = writeln!(
                    body,
                    "    location @gw_{n}_{i} {{\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Sluice-Route {};",
                    quote_raw(&header)
                );
                for (k, f) in rule
                    .get("filters")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|f| s(f, "/type") == "RequestMirror")
                    .enumerate()
                {
                    let Some(r) = f.pointer("/requestMirror/backendRef") else {
                        continue;
                    };
                    let b = self.backend_ref(ns, "HTTPRoute", r);
                    if b.invalid {
                        continue;
                    }
                    // `percent`, or `fraction` (denominator 100 by default); absent: all.
                    let (num, den) = if let Some(p) =
                        f.pointer("/requestMirror/percent").and_then(Value::as_u64)
                    {
                        (p.min(100), 100)
                    } else if let Some(fr) = f.pointer("/requestMirror/fraction") {
                        let den = fr
                            .get("denominator")
                            .and_then(Value::as_u64)
                            .filter(|d| *d > 0)
                            .unwrap_or(100);
                        let num = fr
                            .get("numerator")
                            .and_then(Value::as_u64)
                            .unwrap_or(0)
                            .min(den);
                        (num, den)
                    } else {
                        (1, 1)
                    };
                    if num == 0 {
                        continue;
                    }
                    let mut mt = vec![(b, u32::try_from(num).unwrap_or(u32::MAX))];
                    if den > num {
                        mt.push((discard(), u32::try_from(den - num).unwrap_or(u32::MAX)));
                    }
                    let up = self.split(format!("gw_{n}_{i}_m{k}"), mt);
                    let _ = writeln!(body, "      mirror /_sl_mirror_{n}_{i}_{k};");
                    let _ = writeln!(
                        mirrors,
                        "    location = /_sl_mirror_{n}_{i}_{k} {{\n      internal;\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Sluice-Route {};\n      proxy_pass http://{up}$request_uri;\n    }}",
                        quote_raw(&header)
                    );
                }
                let _ = writeln!(body, "      proxy_pass http://{split};\n    }}");
                body.push_str(&mirrors);
                out.rules.insert(i, body);
                // A rule without matches matches every path.
                let default_match = [serde_json::json!({})];
                let matches: Vec<&Value> = match rule.get("matches").and_then(Value::as_array) {
                    Some(m) if !m.is_empty() => m.iter().collect(),
                    _ => default_match.iter().collect(),
                };
                for (index, m) in matches.into_iter().enumerate() {
                    let Some((path, conds, method, headers, queries)) = conditions(m) else {
                        continue;
                    };
                    out.candidates.push(Candidate {
                        path,
                        conds,
                        method,
                        headers,
                        queries,
                        route: n,
                        rule: i,
                        index,
                    });
                }
            }
            rendered.push(out);
        }
        self.gateway_servers(&rendered);
    }

    fn gateway_servers(&mut self, routes: &[Route]) {
        let port = self.ports.gateway;
        let mut maps = String::new();
        // Every match's conditions, chained through maps into one `Y`/`N` variable.
        for c in routes.iter().flat_map(|r| &r.candidates) {
            let id = c.id();
            for (k, cond) in c.conds.iter().enumerate() {
                let (source, regex) = if k == 0 {
                    (quote_raw(&cond.source), format!("~^(?:{})$", cond.regex))
                } else {
                    (
                        quote_raw(&format!("$sl_gm_{id}_{}:{}", k - 1, cond.source)),
                        format!("~^Y:(?:{})$", cond.regex),
                    )
                };
                let _ = writeln!(
                    maps,
                    "  map {source} $sl_gm_{id}_{k} {{\n    {} Y;\n    default N;\n  }}",
                    quote_raw(&regex)
                );
            }
        }
        let mut hosts: BTreeSet<String> = routes
            .iter()
            .flat_map(|r| r.hosts.iter().cloned())
            .collect();
        // The default server: requests whose Host no route names, for routes without hostnames.
        hosts.insert(String::new());
        let mut servers = String::new();
        for host in hosts {
            let mut cands: Vec<(HostRank, &Candidate)> = Vec::new();
            for r in routes {
                if let Some(rank) = host_rank(&host, &r.hosts) {
                    cands.extend(r.candidates.iter().map(|c| (rank, c)));
                }
            }
            cands.sort_by_key(|(rank, c)| {
                (
                    *rank,
                    c.path.rank(),
                    !c.method,
                    std::cmp::Reverse(c.headers),
                    std::cmp::Reverse(c.queries),
                    c.route,
                    c.rule,
                    c.index,
                )
            });
            let mut locs: BTreeSet<Loc> =
                cands.iter().flat_map(|(_, c)| c.path.locations()).collect();
            locs.insert(Loc::Prefix("/".into()));
            let (listen, name) = if host.is_empty() {
                (format!("127.0.0.1:{port} default_server"), "_".to_string())
            } else {
                (format!("127.0.0.1:{port}"), host.clone())
            };
            let _ = writeln!(
                servers,
                "  server {{\n    listen {listen};\n    server_name {name};"
            );
            let mut used: BTreeSet<(usize, usize)> = BTreeSet::new();
            for loc in &locs {
                let head = match loc {
                    Loc::Exact(p) => format!("= {}", quote_raw(p)),
                    Loc::Prefix(p) => quote_raw(p),
                };
                let _ = writeln!(servers, "    location {head} {{");
                let mut unconditional = false;
                for (_, c) in cands.iter().filter(|(_, c)| c.path.covers(loc)) {
                    let target = format!("@gw_{}_{}", c.route, c.rule);
                    used.insert((c.route, c.rule));
                    if c.conds.is_empty() {
                        let _ = writeln!(
                            servers,
                            "      error_page 418 = {target};\n      return 418;"
                        );
                        unconditional = true;
                        break;
                    }
                    let var = format!("$sl_gm_{}_{}", c.id(), c.conds.len() - 1);
                    let _ = writeln!(
                        servers,
                        "      if ({var} = Y) {{ error_page 418 = {target}; return 418; }}"
                    );
                }
                if !unconditional {
                    servers.push_str("      return 404;\n");
                }
                servers.push_str("    }\n");
            }
            for (route, rule) in used {
                if let Some(body) = routes.get(route).and_then(|r| r.rules.get(&rule)) {
                    servers.push_str(body);
                }
            }
            servers.push_str("  }\n");
        }
        self.gateway_http = maps;
        self.gateway_servers = servers;
    }
}

/// The server a mirror's unsampled share goes to: it answers 204 and logs nothing.
pub(super) fn discard() -> Backend {
    Backend {
        namespace: String::new(),
        service: String::new(),
        subset: Some("discard".into()),
        invalid: false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use serde_json::json;

    const PORTS: Ports = Ports {
        ingress: 8000,
        mesh: 8001,
        gateway: 8002,
    };

    fn model() -> Model {
        let mut m = Model::default();
        for (svc, port) in [("web-stable", 1001), ("web-canary", 1002)] {
            m.services.insert(("default".into(), svc.into()));
            m.endpoints.insert(
                ("default".into(), svc.into()),
                vec![Endpoint {
                    pod: svc.into(),
                    port,
                }],
            );
        }
        m
    }

    fn route(rules: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"hostnames": ["web.example"], "rules": rules}})
    }

    fn render_routes(m: &Model) -> String {
        render(m, &mut BackendIds::default(), Path::new("/d"), PORTS, false)
    }

    /// The text between `start` (included) and the next line that is exactly `end`.
    fn block<'a>(conf: &'a str, start: &str, end: &str) -> &'a str {
        let from = conf
            .find(start)
            .unwrap_or_else(|| panic!("no {start:?} in\n{conf}"));
        let len = conf[from..]
            .find(&format!("\n{end}\n"))
            .unwrap_or_else(|| panic!("{start:?} does not end in\n{conf}"));
        &conf[from..from + len + end.len() + 1]
    }

    #[test]
    fn weights_header_match_and_mirror_render_like_a_gateway() {
        let mut m = model();
        m.http_routes.push(route(json!([
            {"matches": [{"headers": [{"name": "X-Canary", "value": "yes"}]}],
             "backendRefs": [{"name": "web-canary", "port": 80}]},
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 80}, {"name": "web-canary", "port": 80, "weight": 20}],
             "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "web-canary", "port": 80}, "percent": 25}}]}
        ])));
        let conf = render_routes(&m);
        // Backends are numbered in the order the rules name them.
        assert_eq!(
            block(&conf, "  upstream gw_0_1 {", "  }"),
            "  upstream gw_0_1 {\n    server unix:/d/b1.sock weight=80 max_fails=0;\n    server unix:/d/b0.sock weight=20 max_fails=0;\n  }"
        );
        assert_eq!(
            block(&conf, "  upstream gw_0_1_m0 {", "  }"),
            "  upstream gw_0_1_m0 {\n    server unix:/d/b0.sock weight=25 max_fails=0;\n    server unix:/d/b2.sock weight=75 max_fails=0;\n  }"
        );
        assert_eq!(
            block(&conf, "  server {\n    listen unix:/d/b2.sock;", "  }"),
            "  server {\n    listen unix:/d/b2.sock;\n    location / { return 204; }\n  }",
            "the unsampled share of the mirror is discarded"
        );
        assert_eq!(
            block(&conf, "  map \"$http_x_canary\"", "  }"),
            "  map \"$http_x_canary\" $sl_gm_0_0_0_0 {\n    \"~^(?:yes)$\" Y;\n    default N;\n  }"
        );
        assert_eq!(
            block(
                &conf,
                "  server {\n    listen 127.0.0.1:8002;\n    server_name web.example;",
                "  }"
            ),
            r#"  server {
    listen 127.0.0.1:8002;
    server_name web.example;
    location "/" {
      if ($sl_gm_0_0_0_0 = Y) { error_page 418 = @gw_0_0; return 418; }
      error_page 418 = @gw_0_1;
      return 418;
    }
    location @gw_0_0 {
      proxy_set_header Connection "";
      proxy_set_header X-Sluice-Route "HTTPRoute/default/web/0";
      proxy_pass http://gw_0_0;
    }
    location @gw_0_1 {
      proxy_set_header Connection "";
      proxy_set_header X-Sluice-Route "HTTPRoute/default/web/1";
      mirror /_sl_mirror_0_1_0;
      proxy_pass http://gw_0_1;
    }
    location = /_sl_mirror_0_1_0 {
      internal;
      proxy_set_header Connection "";
      proxy_set_header X-Sluice-Route "HTTPRoute/default/web/1";
      proxy_pass http://gw_0_1_m0$request_uri;
    }
  }"#
        );
        // A backend's server logs what HTTPRoutes send it, and strips the route header.
        assert_eq!(
            block(&conf, "  server {\n    listen unix:/d/b0.sock;", "  }"),
            "  server {\n    listen unix:/d/b0.sock;\n    location / {\n      set $sl_gw_backend \"default/web-canary\";\n      access_log /d/access.log sluice_gw if=$http_x_sluice_route;\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Sluice-Route \"\";\n      proxy_pass http://pods_0;\n    }\n  }"
        );
        // No route without hostnames: other hosts get 404.
        assert_eq!(
            block(
                &conf,
                "  server {\n    listen 127.0.0.1:8002 default_server;",
                "  }"
            ),
            "  server {\n    listen 127.0.0.1:8002 default_server;\n    server_name _;\n    location \"/\" {\n      return 404;\n    }\n  }"
        );
    }

    #[test]
    fn conditions_of_a_match_are_and_ed_through_chained_maps() {
        let mut m = model();
        m.http_routes.push(route(json!([
            {"matches": [{"method": "POST",
                          "headers": [{"name": "X-Canary", "value": "a.b"}, {"name": "x-user", "type": "RegularExpression", "value": "bob|al\"ice"}],
                          "queryParams": [{"name": "beta", "value": "1"}]}],
             "backendRefs": [{"name": "web-canary", "port": 80}]}
        ])));
        let conf = render_routes(&m);
        assert!(
            conf.contains("  map \"$request_method\" $sl_gm_0_0_0_0 {\n    \"~^(?:POST)$\" Y;"),
            "{conf}"
        );
        assert!(conf.contains("  map \"$sl_gm_0_0_0_0:$http_x_canary\" $sl_gm_0_0_0_1 {\n    \"~^Y:(?:a\\\\.b)$\" Y;"), "{conf}");
        assert!(conf.contains("  map \"$sl_gm_0_0_0_1:$http_x_user\" $sl_gm_0_0_0_2 {\n    \"~^Y:(?:(?:bob|al\\\"ice))$\" Y;"), "{conf}");
        assert!(conf.contains("  map \"$sl_gm_0_0_0_2:$arg_beta\" $sl_gm_0_0_0_3 {\n    \"~^Y:(?:1)$\" Y;\n    default N;"), "{conf}");
        assert!(conf.contains("      if ($sl_gm_0_0_0_3 = Y) { error_page 418 = @gw_0_0; return 418; }\n      return 404;"), "{conf}");
    }

    #[test]
    fn precedence_follows_the_gateway_api() {
        let mut m = model();
        // Older route: catch-all and a header rule on /api.
        m.http_routes.push(json!({"metadata": {"name": "old", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"rules": [
                {"backendRefs": [{"name": "web-stable", "port": 80}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api/"}, "headers": [{"name": "a", "value": "1"}]}],
                 "backendRefs": [{"name": "web-canary", "port": 80}]}]}}));
        // Newer route on the same paths: loses ties, wins on more headers and on exact paths.
        m.http_routes.push(json!({"metadata": {"name": "new", "namespace": "default", "creationTimestamp": "2026-02-01T00:00:00Z"},
            "spec": {"rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "b", "value": "1"}]},
                             {"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]},
                             {"path": {"type": "Exact", "value": "/api"}}],
                 "backendRefs": [{"name": "web-canary", "port": 80}]},
                {"backendRefs": [{"name": "web-canary", "port": 80}]}]}}));
        let conf = render_routes(&m);
        let server = block(
            &conf,
            "  server {\n    listen 127.0.0.1:8002 default_server;",
            "  }",
        );
        // `/api/...`: two headers, then the older route's one header, then the newer one's,
        // then the catch-alls (older first).
        assert!(
            server.contains(
                r#"    location "/api/" {
      if ($sl_gm_1_0_1_1 = Y) { error_page 418 = @gw_1_0; return 418; }
      if ($sl_gm_0_1_0_0 = Y) { error_page 418 = @gw_0_1; return 418; }
      if ($sl_gm_1_0_0_0 = Y) { error_page 418 = @gw_1_0; return 418; }
      error_page 418 = @gw_0_0;
      return 418;
    }"#
            ),
            "{server}"
        );
        // `= /api`: the exact match first, whatever its route's age.
        assert!(server.contains("    location = \"/api\" {\n      error_page 418 = @gw_1_0;\n      return 418;\n    }"), "{server}");
        // `/apix` is not under the prefix `/api`: only the catch-all.
        assert!(
            server.contains(
                "    location \"/\" {\n      error_page 418 = @gw_0_0;\n      return 418;\n    }"
            ),
            "{server}"
        );
        assert!(
            !server.contains("@gw_1_1;"),
            "the newer catch-all is never reached: {server}"
        );
    }

    #[test]
    fn hostnames_exact_before_wildcard_before_none() {
        let mut m = model();
        let r = |name: &str, ts: &str, hosts: Value, svc: &str| {
            json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": ts},
                "spec": {"hostnames": hosts, "rules": [{"backendRefs": [{"name": svc, "port": 80}]}]}})
        };
        m.http_routes
            .push(r("any", "2026-01-01T00:00:00Z", json!([]), "web-stable"));
        m.http_routes.push(r(
            "wild",
            "2026-01-02T00:00:00Z",
            json!(["*.example"]),
            "web-stable",
        ));
        m.http_routes.push(r(
            "exact",
            "2026-01-03T00:00:00Z",
            json!(["web.example"]),
            "web-canary",
        ));
        let conf = render_routes(&m);
        let exact = block(&conf, "    server_name web.example;", "  }");
        assert!(
            exact.contains("location \"/\" {\n      error_page 418 = @gw_2_0;"),
            "{exact}"
        );
        let wild = block(&conf, "    server_name *.example;", "  }");
        assert!(
            wild.contains("location \"/\" {\n      error_page 418 = @gw_1_0;"),
            "{wild}"
        );
        let any = block(&conf, "    server_name _;\n    location \"/\"", "  }");
        assert!(any.contains("error_page 418 = @gw_0_0;"), "{any}");
    }

    #[test]
    fn unusable_backends_keep_their_share_as_500s() {
        let mut m = model();
        m.services.insert(("other".into(), "shared".into()));
        m.http_routes.push(route(json!([
            {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 50},
                             {"name": "missing", "port": 80, "weight": 30},
                             {"name": "shared", "namespace": "other", "port": 80, "weight": 20}]},
            {"matches": [{"path": {"value": "/zero"}}],
             "backendRefs": [{"name": "web-stable", "port": 80, "weight": 0}]}
        ])));
        let conf = render_routes(&m);
        let up = block(&conf, "  upstream gw_0_0 {", "  }");
        assert_eq!(up.matches("weight=").count(), 3, "{up}");
        let invalid_servers = conf.matches("      return 500;\n").count();
        // `missing`, `other/shared` (no ReferenceGrant), and the rule with no weight.
        assert_eq!(invalid_servers, 3, "{conf}");
        assert!(conf.contains("set $sl_gw_backend \"other/shared\";\n      access_log /d/access.log sluice_gw if=$http_x_sluice_route;\n      return 500;"), "{conf}");

        // A ReferenceGrant in `other` for HTTPRoutes of `default` makes `shared` usable.
        m.endpoints.insert(
            ("other".into(), "shared".into()),
            vec![Endpoint {
                pod: "s".into(),
                port: 1003,
            }],
        );
        m.reference_grants.push(json!({"metadata": {"name": "g", "namespace": "other"},
            "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
                     "to": [{"group": "", "kind": "Service"}]}}));
        let conf = render_routes(&m);
        assert_eq!(conf.matches("      return 500;\n").count(), 2, "{conf}");
        assert!(
            conf.contains("server 127.0.0.1:1003 max_fails=0;"),
            "{conf}"
        );
        // A grant from another namespace, or for another Service name, does not.
        m.reference_grants[0]["spec"]["to"][0]["name"] = json!("not-shared");
        assert_eq!(render_routes(&m).matches("      return 500;\n").count(), 3);
    }

    #[test]
    fn mirror_fraction_and_full_mirror() {
        let mut m = model();
        m.http_routes.push(route(json!([
            {"matches": [{"path": {"value": "/a"}}],
             "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "web-canary", "port": 80}, "fraction": {"numerator": 1, "denominator": 3}}}],
             "backendRefs": [{"name": "web-stable", "port": 80}]},
            {"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "web-canary", "port": 80}}},
                         {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "nope", "port": 80}}}],
             "backendRefs": [{"name": "web-stable", "port": 80}]}
        ])));
        let conf = render_routes(&m);
        assert!(conf.contains("upstream gw_0_0_m0 {\n    server unix:/d/b1.sock weight=1 max_fails=0;\n    server unix:/d/b2.sock weight=2 max_fails=0;\n  }"), "{conf}");
        assert!(
            conf.contains(
                "upstream gw_0_1_m0 {\n    server unix:/d/b1.sock weight=1 max_fails=0;\n  }"
            ),
            "{conf}"
        );
        // A mirror to a Service that does not exist is not rendered.
        assert!(!conf.contains("_sl_mirror_0_1_1"), "{conf}");
        // `/a` is a prefix: `/a/...` and `= /a` both take the first rule.
        assert!(
            conf.contains("    location \"/a/\" {\n      error_page 418 = @gw_0_0;"),
            "{conf}"
        );
        assert!(
            conf.contains("    location = \"/a\" {\n      error_page 418 = @gw_0_0;"),
            "{conf}"
        );
    }
}
