//! Validation of a Rollout that needs no cluster.
//!
//! Every rule the controller applies lives here, so that `sluice lint` and the controller agree.
//! Each error names the field path (as a service owner would write it in YAML) and why.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::constants::{DEFAULT_MAX_TRAFFIC_WEIGHT, DEFAULT_REPLICAS, MAX_CANARY_STEPS};
use super::rollout::{
    AntiAffinity, BlueGreenStrategy, CanaryStep, CanaryStrategy, GatewayApiRoute,
    GatewayApiTrafficRouting, RolloutAnalysis, RolloutSpec, StringMatch, TrafficRouting,
};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the field, e.g. `spec.strategy.canary.steps[2].setWeight`.
    pub field: String,
    /// What is wrong, in lower case.
    pub message: String,
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Checks a Rollout spec; returns every invalid field (empty when valid).
pub fn validate_rollout_spec(spec: &RolloutSpec) -> Vec<FieldError> {
    let mut errs = Errors::default();

    if let Some(r) = spec.replicas
        && r < 0
    {
        errs.add("spec.replicas", format!("must not be negative, got {r}"));
    }
    if let Some(limit) = spec.revision_history_limit
        && limit < 0
    {
        errs.add(
            "spec.revisionHistoryLimit",
            format!("must not be negative, got {limit}"),
        );
    }
    if let Some(deadline) = spec.progress_deadline_seconds {
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if deadline <= min_ready {
            errs.add(
                "spec.progressDeadlineSeconds",
                format!("must be greater than minReadySeconds ({min_ready}), got {deadline}"),
            );
        }
    }

    validate_template_and_selector(spec, &mut errs);

    match (&spec.strategy.canary, &spec.strategy.blue_green) {
        (Some(_), Some(_)) => errs.add(
            "spec.strategy",
            "exactly one of canary or blueGreen must be set, both are",
        ),
        (None, None) => errs.add(
            "spec.strategy",
            "exactly one of canary or blueGreen must be set",
        ),
        (None, Some(bg)) => validate_blue_green(bg, spec.replicas, &mut errs),
        (Some(canary), None) => validate_canary(canary, &mut errs),
    }
    errs.0
}

fn validate_template_and_selector(spec: &RolloutSpec, errs: &mut Errors) {
    let has_template = spec.template.as_ref().is_some_and(|t| t.spec.is_some());
    // As Argo: labels or annotations in the template of a workloadRef Rollout would be ignored
    // (the Deployment's template is used), so they are refused rather than silently dropped.
    let has_metadata = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .is_some_and(|m| {
            m.labels.as_ref().is_some_and(|l| !l.is_empty())
                || m.annotations.as_ref().is_some_and(|a| !a.is_empty())
        });
    match (&spec.workload_ref, has_template) {
        (Some(_), true) => errs.add(
            "spec.template",
            "template and workloadRef are mutually exclusive",
        ),
        (Some(_), false) if has_metadata => errs.add(
            "spec.template",
            "template must be empty for a workloadRef Rollout: template and workloadRef are \
             mutually exclusive",
        ),
        (None, false) => errs.add(
            "spec.template",
            "a pod template (or workloadRef) is required",
        ),
        _ => {}
    }
    if let Some(w) = &spec.workload_ref {
        if w.kind != "Deployment" {
            errs.add(
                "spec.workloadRef.kind",
                format!("only Deployment is supported, got {:?}", w.kind),
            );
        }
        if w.api_version != "apps/v1" {
            errs.add(
                "spec.workloadRef.apiVersion",
                format!("must be apps/v1, got {:?}", w.api_version),
            );
        }
        if w.name.is_empty() {
            errs.add("spec.workloadRef.name", "must not be empty");
        }
    }
    if let Some(template) = &spec.template {
        errs.0.extend(super::quantity::check_pod_template(
            template,
            "spec.template",
        ));
        check_container_names(template, errs);
    }
    // With a workloadRef the selector may come from the Deployment.
    if spec.workload_ref.is_some() {
        return;
    }
    let Some(selector) = &spec.selector else {
        errs.add("spec.selector", "is required");
        return;
    };
    let match_labels = selector.match_labels.clone().unwrap_or_default();
    if match_labels.is_empty()
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        errs.add(
            "spec.selector",
            "must not be empty: an empty selector would select every pod in the namespace",
        );
        return;
    }
    let labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in &match_labels {
        if labels.get(k) != Some(v) {
            errs.add(
                "spec.selector.matchLabels",
                format!(
                    "{k}={v} does not match the template's labels (spec.template.metadata.labels)"
                ),
            );
        }
    }
}

/// Container names must be unique across containers, init and ephemeral containers, or the API
/// server refuses every ReplicaSet of the template (Argo's `TestMalformedRolloutEphemeralCtr`).
fn check_container_names(template: &PodTemplateSpec, errs: &mut Errors) {
    let Some(spec) = &template.spec else {
        return;
    };
    let names = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("containers[{i}]"), &c.name))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| (format!("initContainers[{i}]"), &c.name)),
        )
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| (format!("ephemeralContainers[{i}]"), &c.name)),
        );
    let mut seen = BTreeSet::new();
    for (at, name) in names {
        if !seen.insert(name.as_str()) {
            errs.add(
                format!("spec.template.spec.{at}.name"),
                format!("duplicate container name {name:?}: names must be unique across containers, initContainers and ephemeralContainers"),
            );
        }
    }
}

fn max_weight(canary: &CanaryStrategy) -> i32 {
    canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.max_traffic_weight)
        .unwrap_or(DEFAULT_MAX_TRAFFIC_WEIGHT)
}

pub use super::rollout::GATEWAY_API_PLUGIN;

/// What to use instead of a router Sluice does not implement.
const INSTEAD: &str = "use trafficRouting.nginx, trafficRouting.istio or trafficRouting.gatewayAPI";

/// Why an Argo Rollouts router Sluice does not implement is refused, and what to use instead.
fn unsupported_router_message(name: &str, routing: &TrafficRouting) -> String {
    let router = match name {
        "alb" => "AWS ALB traffic routing (trafficRouting.alb)",
        "smi" => "SMI traffic routing (trafficRouting.smi)",
        "appMesh" => "AWS App Mesh traffic routing (trafficRouting.appMesh)",
        "apisix" => "APISIX traffic routing (trafficRouting.apisix)",
        "ambassador" => "Ambassador traffic routing (trafficRouting.ambassador)",
        "traefik" => "Traefik traffic routing (trafficRouting.traefik)",
        _ => {
            let plugins: Vec<String> = routing
                .unsupported_plugins()
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect();
            return format!(
                "traffic router plugins ({}) are not supported by Sluice (of Argo Rollouts' \
                 plugins only {GATEWAY_API_PLUGIN} is, carried out natively); {INSTEAD}",
                if plugins.is_empty() {
                    "none named".to_string()
                } else {
                    plugins.join(", ")
                }
            );
        }
    };
    format!("{router} is not supported by Sluice; {INSTEAD}")
}

/// The Gateway API routing's own rules (the routes named, one form per kind, no discovery by
/// label); `field` is where it was configured (`gatewayAPI` or the plugin's entry).
fn validate_gateway_api(
    field: &str,
    g: &GatewayApiTrafficRouting,
    routing: &TrafficRouting,
    errs: &mut Errors,
) {
    let kinds: [(&str, &Option<String>, &Vec<GatewayApiRoute>); 4] = [
        ("http", &g.http_route, &g.http_routes),
        ("grpc", &g.grpc_route, &g.grpc_routes),
        ("tcp", &g.tcp_route, &g.tcp_routes),
        ("tls", &g.tls_route, &g.tls_routes),
    ];
    let mut any = false;
    for (kind, single, list) in kinds {
        if let Some(name) = single {
            any = true;
            if name.is_empty() {
                errs.add(format!("{field}.{kind}Route"), "must not be empty");
            }
            if !list.is_empty() {
                errs.add(
                    format!("{field}.{kind}Routes"),
                    format!("{kind}Route and {kind}Routes are mutually exclusive"),
                );
            }
        }
        let mut seen = BTreeSet::new();
        for (i, r) in list.iter().enumerate() {
            any = true;
            if r.name.is_empty() {
                errs.add(
                    format!("{field}.{kind}Routes[{i}].name"),
                    "must not be empty",
                );
            } else if !seen.insert(r.name.as_str()) {
                errs.add(
                    format!("{field}.{kind}Routes[{i}].name"),
                    format!("duplicate route name {:?}", r.name),
                );
            }
        }
    }
    for (kind, selector) in [
        ("http", &g.http_route_selector),
        ("grpc", &g.grpc_route_selector),
        ("tcp", &g.tcp_route_selector),
        ("tls", &g.tls_route_selector),
    ] {
        if selector.is_some() {
            any = true;
            errs.add(
                format!("{field}.{kind}RouteSelector"),
                format!(
                    "route discovery by label is not supported by Sluice; name the routes in \
                     {kind}Route or {kind}Routes"
                ),
            );
        }
    }
    if !any {
        errs.add(
            field,
            "names no route: set httpRoute(s), grpcRoute(s), tcpRoute(s) or tlsRoute(s)",
        );
    }
    if g.namespace.as_deref() == Some("") {
        errs.add(format!("{field}.namespace"), "must not be empty when set");
    }
    // The plugin's configuration is kept as written (the API server prunes nothing there): a
    // route kind Sluice does not know would otherwise be silently ignored.
    const KNOWN: [&str; 12] = [
        "httpRoute",
        "httpRoutes",
        "grpcRoute",
        "grpcRoutes",
        "tcpRoute",
        "tcpRoutes",
        "tlsRoute",
        "tlsRoutes",
        "httpRouteSelector",
        "grpcRouteSelector",
        "tcpRouteSelector",
        "tlsRouteSelector",
    ];
    let raw = routing
        .plugins
        .as_ref()
        .and_then(|p| p.get(GATEWAY_API_PLUGIN))
        .and_then(serde_json::Value::as_object)
        .filter(|_| routing.gateway_api.is_none());
    for key in raw.into_iter().flat_map(|r| r.keys()) {
        let lower = key.to_ascii_lowercase();
        let route_like = ["route", "routes", "routeselector"]
            .iter()
            .any(|suffix| lower.ends_with(suffix));
        if route_like && !KNOWN.contains(&key.as_str()) {
            errs.add(
                format!("{field}.{key}"),
                format!(
                    "unknown route kind {key:?}: Sluice weights httpRoute(s), grpcRoute(s), \
                     tcpRoute(s) and tlsRoute(s)"
                ),
            );
        }
    }
    // Sluice's header and mirror rules carry the managed route's name as the rule's `name`,
    // which the Gateway API restricts to lower-case DNS names.
    for (i, r) in routing.managed_routes.iter().enumerate() {
        if !is_dns_subdomain(&r.name) {
            errs.add(
                format!("spec.strategy.canary.trafficRouting.managedRoutes[{i}].name"),
                format!(
                    "{:?} cannot name a Gateway API route rule: use lower-case letters, digits, \
                     '-' and '.', starting and ending with a letter or digit",
                    r.name
                ),
            );
        }
    }
}

/// A lower-case RFC 1123 subdomain (at most 253 characters), as Gateway API `SectionName`s are.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether the routing needs the canary and stable Services: NGINX, the Gateway API (in either
/// shape) and host-level Istio do. As in
/// Argo Rollouts, Istio subset-level routing does not: its DestinationRule subsets select the
/// pods by hash, so the Services (if any) are left to the user. (Routers Sluice does not
/// implement are refused on their own.)
pub fn requires_services(routing: &TrafficRouting) -> bool {
    let host_level_istio = routing
        .istio
        .as_ref()
        .is_some_and(|i| i.destination_rule.is_none());
    routing.nginx.is_some() || host_level_istio || routing.has_gateway_api()
}

fn validate_canary(canary: &CanaryStrategy, errs: &mut Errors) {
    const C: &str = "spec.strategy.canary";
    let routing = canary.traffic_routing.as_ref();
    let max = max_weight(canary);
    let nonempty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());

    if let (Some(c), Some(s)) = (&canary.canary_service, &canary.stable_service)
        && !c.is_empty()
        && c == s
    {
        errs.add(
            format!("{C}.stableService"),
            format!("must differ from canaryService (both are {c:?})"),
        );
    }

    if routing.is_none() {
        for (set, field) in [
            (
                canary.scale_down_delay_seconds.is_some(),
                "scaleDownDelaySeconds",
            ),
            (
                canary.abort_scale_down_delay_seconds.is_some(),
                "abortScaleDownDelaySeconds",
            ),
            (
                canary.dynamic_stable_scale == Some(true),
                "dynamicStableScale",
            ),
            (
                canary.min_pods_per_replica_set.is_some(),
                "minPodsPerReplicaSet",
            ),
            (
                canary.scale_down_delay_revision_limit.is_some(),
                "scaleDownDelayRevisionLimit",
            ),
        ] {
            if set {
                errs.add(
                    format!("{C}.{field}"),
                    "can only be used with trafficRouting",
                );
            }
        }
        let surge = resolve_int_or_percent(canary.max_surge.as_ref(), 100, true);
        let unavailable = resolve_int_or_percent(canary.max_unavailable.as_ref(), 100, false);
        match (surge, unavailable) {
            (Err(e), _) => errs.add(format!("{C}.maxSurge"), e.to_string()),
            (_, Err(e)) => errs.add(format!("{C}.maxUnavailable"), e.to_string()),
            (Ok(0), Ok(0)) if canary.max_surge.is_some() || canary.max_unavailable.is_some() => {
                errs.add(
                    format!("{C}.maxUnavailable"),
                    "maxSurge and maxUnavailable cannot both be 0: no pod could ever be replaced",
                )
            }
            _ => {}
        }
    }
    if canary.ping_pong.is_some() {
        errs.add(
            format!("{C}.pingPong"),
            "pingPong is not supported by Sluice; use canaryService and stableService",
        );
    }
    if canary.replica_progress_threshold.is_some() {
        errs.add(
            format!("{C}.replicaProgressThreshold"),
            "replicaProgressThreshold is not supported by Sluice; remove it: a step waits until \
             every canary pod it asks for is available",
        );
    }
    if canary.dynamic_stable_scale == Some(true) && canary.scale_down_delay_seconds.is_some() {
        errs.add(
            format!("{C}.scaleDownDelaySeconds"),
            "cannot be used with dynamicStableScale",
        );
    }

    if let Some(routing) = routing {
        const T: &str = "spec.strategy.canary.trafficRouting";
        if requires_services(routing) {
            for (set, field) in [
                (nonempty(&canary.canary_service), "canaryService"),
                (nonempty(&canary.stable_service), "stableService"),
            ] {
                if !set {
                    errs.add(
                        format!("{C}.{field}"),
                        "is required with trafficRouting (except Istio subset-level routing through a destinationRule)",
                    );
                }
            }
        }
        let unsupported = routing.unsupported_routers();
        for name in &unsupported {
            errs.add(
                format!("{T}.{name}"),
                unsupported_router_message(name, routing),
            );
        }
        let gateway_api = match routing.gateway_api_config() {
            Ok(g) => {
                if let Some((field, config)) = &g {
                    validate_gateway_api(field, config, routing, errs);
                }
                g.is_some()
            }
            Err((field, message)) => {
                errs.add(field, message);
                true
            }
        };
        if routing.nginx.is_none()
            && routing.istio.is_none()
            && !gateway_api
            && unsupported.is_empty()
        {
            errs.add(
                T,
                "must configure nginx, istio or gatewayAPI (other routers are not supported)",
            );
        }
        if let Some(w) = routing.max_traffic_weight
            && w < 1
        {
            errs.add(
                format!("{T}.maxTrafficWeight"),
                format!("must be at least 1, got {w}"),
            );
        }
        if let Some(nginx) = &routing.nginx {
            let single = nginx
                .stable_ingress
                .as_deref()
                .is_some_and(|s| !s.is_empty());
            match (single, nginx.stable_ingresses.is_empty()) {
                (true, false) => errs.add(
                    format!("{T}.nginx.stableIngresses"),
                    "stableIngress and stableIngresses are mutually exclusive",
                ),
                (false, true) => errs.add(
                    format!("{T}.nginx.stableIngress"),
                    "one of stableIngress or stableIngresses is required",
                ),
                _ => {}
            }
            for (i, name) in nginx.stable_ingresses.iter().enumerate() {
                if name.is_empty() {
                    errs.add(
                        format!("{T}.nginx.stableIngresses[{i}]"),
                        "must not be empty",
                    );
                }
            }
        }
        if let Some(istio) = &routing.istio {
            match (&istio.virtual_service, istio.virtual_services.is_empty()) {
                (Some(_), false) => errs.add(
                    format!("{T}.istio.virtualServices"),
                    "virtualService and virtualServices are mutually exclusive",
                ),
                (None, true) => errs.add(
                    format!("{T}.istio.virtualService"),
                    "one of virtualService or virtualServices is required",
                ),
                _ => {}
            }
            let services: Vec<_> = istio
                .virtual_service
                .iter()
                .chain(istio.virtual_services.iter())
                .collect();
            for (i, vs) in services.iter().enumerate() {
                if vs.name.is_empty() {
                    errs.add(
                        format!("{T}.istio.virtualServices[{i}].name"),
                        "must not be empty",
                    );
                }
            }
            if let Some(dr) = &istio.destination_rule {
                if dr.name.is_empty() {
                    errs.add(
                        format!("{T}.istio.destinationRule.name"),
                        "must not be empty",
                    );
                }
                if dr.canary_subset_name.is_empty() || dr.stable_subset_name.is_empty() {
                    errs.add(
                        format!("{T}.istio.destinationRule"),
                        "canarySubsetName and stableSubsetName are required",
                    );
                } else if dr.canary_subset_name == dr.stable_subset_name {
                    errs.add(
                        format!("{T}.istio.destinationRule.stableSubsetName"),
                        "must differ from canarySubsetName",
                    );
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, r) in routing.managed_routes.iter().enumerate() {
            if !seen.insert(r.name.as_str()) {
                errs.add(
                    format!("{T}.managedRoutes[{i}].name"),
                    format!("duplicate route name {:?}", r.name),
                );
            }
        }
    }

    if let Some(aa) = &canary.anti_affinity {
        validate_anti_affinity(aa, C, errs);
    }

    if canary.steps.len() > MAX_CANARY_STEPS {
        errs.add(
            format!("{C}.steps"),
            format!(
                "must have at most {MAX_CANARY_STEPS} steps, got {}",
                canary.steps.len()
            ),
        );
    }
    for (i, step) in canary.steps.iter().enumerate() {
        validate_step(canary, step, &format!("{C}.steps[{i}]"), max, errs);
    }

    if let Some(bg) = &canary.analysis {
        let field = format!("{C}.analysis");
        validate_analysis(&bg.analysis, &field, errs);
        if let Some(start) = bg.starting_step
            && (start < 0 || start as usize > canary.steps.len())
        {
            errs.add(
                format!("{field}.startingStep"),
                format!(
                    "must be between 0 and the number of steps ({}), got {start}",
                    canary.steps.len()
                ),
            );
        }
    }
}

fn validate_step(
    canary: &CanaryStrategy,
    step: &CanaryStep,
    field: &str,
    max: i32,
    errs: &mut Errors,
) {
    let routing = canary.traffic_routing.as_ref();
    let actions = [
        step.set_weight.is_some(),
        step.pause.is_some(),
        step.set_canary_scale.is_some(),
        step.analysis.is_some(),
        step.set_header_route.is_some(),
        step.set_mirror_route.is_some(),
        step.experiment.is_some(),
        step.plugin.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if actions == 0 {
        errs.add(
            field,
            "a step needs one of setWeight, pause, setCanaryScale, analysis, setHeaderRoute or setMirrorRoute",
        );
    } else if actions > 1 {
        errs.add(
            field,
            "a step may carry only one action; split it into several steps",
        );
    }
    if step.experiment.is_some() {
        errs.add(
            format!("{field}.experiment"),
            "experiment steps are not supported by Sluice; use an analysis step (Prometheus \
             metrics) against the canary, with setCanaryScale for a fixed number of canary pods",
        );
    }
    if step.plugin.is_some() {
        errs.add(
            format!("{field}.plugin"),
            "step plugins are not supported by Sluice; use analysis steps (Prometheus metrics)",
        );
    }
    if let Some(w) = step.set_weight
        && !(0..=max).contains(&w)
    {
        errs.add(
            format!("{field}.setWeight"),
            format!("must be between 0 and {max} (maxTrafficWeight), got {w}"),
        );
    }
    if let Some(pause) = &step.pause
        && let Some(d) = &pause.duration
        && let Err(e) = d.to_std()
    {
        errs.add(format!("{field}.pause.duration"), e.to_string());
    }
    if let Some(scale) = &step.set_canary_scale {
        let set = [
            scale.weight.is_some(),
            scale.replicas.is_some(),
            scale.match_traffic_weight == Some(true),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            errs.add(
                format!("{field}.setCanaryScale"),
                "exactly one of weight, replicas or matchTrafficWeight must be set",
            );
        }
        if let Some(w) = scale.weight
            && !(0..=100).contains(&w)
        {
            errs.add(
                format!("{field}.setCanaryScale.weight"),
                format!("must be between 0 and 100, got {w}"),
            );
        }
        if let Some(r) = scale.replicas
            && r < 0
        {
            errs.add(
                format!("{field}.setCanaryScale.replicas"),
                format!("must not be negative, got {r}"),
            );
        }
        if routing.is_none() {
            errs.add(format!("{field}.setCanaryScale"), "requires trafficRouting");
        }
    }
    if let Some(analysis) = &step.analysis {
        validate_analysis(analysis, &format!("{field}.analysis"), errs);
    }
    let managed =
        |name: &str| routing.is_some_and(|r| r.managed_routes.iter().any(|m| m.name == name));
    if let Some(route) = &step.set_header_route {
        let f = format!("{field}.setHeaderRoute");
        if !routing.is_some_and(|r| r.istio.is_some() || r.has_gateway_api()) {
            errs.add(
                &f,
                "requires trafficRouting.istio or trafficRouting.gatewayAPI (with NGINX, use canary-by-header in additionalIngressAnnotations)",
            );
        }
        if !managed(&route.name) {
            errs.add(
                format!("{f}.name"),
                format!(
                    "{:?} is not listed in trafficRouting.managedRoutes",
                    route.name
                ),
            );
        }
        for (i, m) in route.match_.iter().enumerate() {
            if m.header_name.is_empty() {
                errs.add(format!("{f}.match[{i}].headerName"), "must not be empty");
            }
            check_string_match(
                &m.header_value,
                &format!("{f}.match[{i}].headerValue"),
                errs,
            );
        }
    }
    if let Some(route) = &step.set_mirror_route {
        let f = format!("{field}.setMirrorRoute");
        let gateway_api = routing.is_some_and(|r| r.has_gateway_api());
        if routing.is_none_or(|r| r.istio.is_none()) && !gateway_api {
            errs.add(
                &f,
                "requires trafficRouting.istio or trafficRouting.gatewayAPI",
            );
        }
        if gateway_api {
            // The Gateway API matches methods by name only.
            for (i, m) in route.match_.iter().enumerate() {
                if let Some(method) = &m.method
                    && (method.exact.is_none() || method.prefix.is_some() || method.regex.is_some())
                {
                    errs.add(
                        format!("{f}.match[{i}].method"),
                        "must be an exact method name with trafficRouting.gatewayAPI",
                    );
                }
            }
        }
        if !managed(&route.name) {
            errs.add(
                format!("{f}.name"),
                format!(
                    "{:?} is not listed in trafficRouting.managedRoutes",
                    route.name
                ),
            );
        }
        if let Some(p) = route.percentage
            && !(0..=100).contains(&p)
        {
            errs.add(
                format!("{f}.percentage"),
                format!("must be between 0 and 100, got {p}"),
            );
        }
        for (i, m) in route.match_.iter().enumerate() {
            if let Some(s) = &m.method {
                check_string_match(s, &format!("{f}.match[{i}].method"), errs);
            }
            if let Some(s) = &m.path {
                check_string_match(s, &format!("{f}.match[{i}].path"), errs);
            }
            for (h, s) in &m.headers {
                check_string_match(s, &format!("{f}.match[{i}].headers.{h}"), errs);
            }
        }
    }
}

fn check_string_match(m: &StringMatch, field: &str, errs: &mut Errors) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        errs.add(field, "exactly one of exact, prefix or regex must be set");
    }
}

fn validate_anti_affinity(aa: &AntiAffinity, strategy: &str, errs: &mut Errors) {
    match (
        &aa.preferred_during_scheduling_ignored_during_execution,
        &aa.required_during_scheduling_ignored_during_execution,
    ) {
        (Some(_), Some(_)) | (None, None) => errs.add(
            format!("{strategy}.antiAffinity"),
            "exactly one of preferredDuringSchedulingIgnoredDuringExecution or requiredDuringSchedulingIgnoredDuringExecution must be set",
        ),
        (Some(p), None) if !(1..=100).contains(&p.weight) => errs.add(
            format!("{strategy}.antiAffinity.preferredDuringSchedulingIgnoredDuringExecution.weight"),
            format!("must be between 1 and 100, got {}", p.weight),
        ),
        _ => {}
    }
}

/// The blue-green strategy: an active Service, a different preview Service, a preview no
/// larger than the Rollout, sound analyses, and none of the canary's fields.
fn validate_blue_green(bg: &BlueGreenStrategy, replicas: Option<i32>, errs: &mut Errors) {
    const B: &str = "spec.strategy.blueGreen";
    if bg.active_service.is_empty() {
        errs.add(format!("{B}.activeService"), "is required");
    }
    if let Some(preview) = bg.preview_service.as_deref()
        && !preview.is_empty()
        && preview == bg.active_service
    {
        errs.add(
            format!("{B}.previewService"),
            format!("must differ from activeService (both are {preview:?})"),
        );
    }
    let replicas = replicas.unwrap_or(DEFAULT_REPLICAS);
    if let Some(n) = bg.preview_replica_count {
        if n < 0 {
            errs.add(
                format!("{B}.previewReplicaCount"),
                format!("must not be negative, got {n}"),
            );
        } else if n > replicas {
            errs.add(
                format!("{B}.previewReplicaCount"),
                format!("must not exceed spec.replicas ({replicas}), got {n}"),
            );
        }
    }
    for (field, value) in [
        ("autoPromotionSeconds", bg.auto_promotion_seconds),
        ("scaleDownDelaySeconds", bg.scale_down_delay_seconds),
        (
            "scaleDownDelayRevisionLimit",
            bg.scale_down_delay_revision_limit,
        ),
        (
            "abortScaleDownDelaySeconds",
            bg.abort_scale_down_delay_seconds,
        ),
    ] {
        if let Some(v) = value.filter(|v| *v < 0) {
            errs.add(
                format!("{B}.{field}"),
                format!("must not be negative, got {v}"),
            );
        }
    }
    if let Err(e) = resolve_int_or_percent(bg.max_unavailable.as_ref(), replicas, false) {
        errs.add(format!("{B}.maxUnavailable"), e.to_string());
    }
    if let Some(aa) = &bg.anti_affinity {
        validate_anti_affinity(aa, B, errs);
    }
    for (field, analysis) in [
        ("prePromotionAnalysis", &bg.pre_promotion_analysis),
        ("postPromotionAnalysis", &bg.post_promotion_analysis),
    ] {
        if let Some(a) = analysis {
            validate_analysis(a, &format!("{B}.{field}"), errs);
        }
    }
    for field in bg.canary_only_fields() {
        errs.add(
            format!("{B}.{field}"),
            format!("{field} is a canary field; a blue-green Rollout cannot use it"),
        );
    }
}

fn validate_analysis(analysis: &RolloutAnalysis, field: &str, errs: &mut Errors) {
    if analysis.templates.is_empty() {
        errs.add(
            format!("{field}.templates"),
            "at least one template is required",
        );
    }
    for (i, t) in analysis.templates.iter().enumerate() {
        if t.template_name.is_empty() {
            errs.add(
                format!("{field}.templates[{i}].templateName"),
                "must not be empty",
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, a) in analysis.args.iter().enumerate() {
        let f = format!("{field}.args[{i}]");
        if a.name.is_empty() {
            errs.add(format!("{f}.name"), "must not be empty");
        } else if !seen.insert(a.name.as_str()) {
            errs.add(
                format!("{f}.name"),
                format!("duplicate argument {:?}", a.name),
            );
        }
        if let Some(from) = &a.value_from {
            let n = usize::from(from.pod_template_hash_value.is_some())
                + usize::from(from.field_ref.is_some());
            if n != 1 || a.value.is_some() {
                errs.add(
                    format!("{f}.valueFrom"),
                    "exactly one of value, valueFrom.podTemplateHashValue or valueFrom.fieldRef must be set",
                );
            }
        }
    }
}

/// Why an int-or-percentage (`maxSurge`, `maxUnavailable`) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntOrPercentError {
    /// A negative number or percentage, as written.
    #[error("must not be negative, got {0}")]
    Negative(String),
    /// Text that is neither a number nor a percentage.
    #[error("{0:?} is neither a number nor a percentage like \"25%\"")]
    Unparseable(String),
}

/// Resolves an int-or-percentage (`maxSurge`, `maxUnavailable`) against `total`. Percentages
/// round up for surge and down for unavailability, as Kubernetes Deployments do.
pub fn resolve_int_or_percent(
    value: Option<&IntOrString>,
    total: i32,
    round_up: bool,
) -> Result<i32, IntOrPercentError> {
    let value = value
        .cloned()
        .unwrap_or_else(|| IntOrString::String("25%".to_string()));
    match value {
        IntOrString::Int(n) if n < 0 => Err(IntOrPercentError::Negative(n.to_string())),
        IntOrString::Int(n) => Ok(n),
        IntOrString::String(s) => {
            let Some(pct) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return Err(IntOrPercentError::Unparseable(s));
            };
            if pct < 0 {
                return Err(IntOrPercentError::Negative(format!("{s:?}")));
            }
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            Ok(v as i32)
        }
    }
}
