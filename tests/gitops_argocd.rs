//! The GitOps health views of a Rollout, checked against Rollouts recorded from the planner in
//! every phase: Argo CD's health check and resource actions (the Lua in
//! `charts/sluice/argocd/argocd-cm.yaml`, run by a real Lua interpreter), and kstatus' rules
//! for generic resources (what Flux's health checks use), implemented below.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sluice::api::common::AnalysisPhase;
use sluice::cli::actions::{Action, plan};
use sluice::plan::AnalysisRunKind;
use sluice::plan::sim::World;
use sluice_test_support::tools::require_tool;
use sluice_test_support::world::*;

const STEPS: &str = r#"
canaryService: web-canary
stableService: web-stable
trafficRouting: {nginx: {stableIngress: web}}
steps:
- setWeight: 20
- analysis: {templates: [{templateName: t}]}
- setWeight: 50
- pause: {}
- setWeight: 80
"#;

/// The API server bumps `metadata.generation` on every spec change; the planner's world does
/// not, so the recordings do it where they change the spec.
fn bump_generation(w: &mut World) {
    let g = w.rollout.metadata.generation.unwrap_or(1);
    w.rollout.metadata.generation = Some(g + 1);
}

fn update(w: &mut World) {
    w.set_image("web:2");
    bump_generation(w);
}

fn record(w: &World) -> Value {
    serde_json::to_value(&w.rollout).unwrap()
}

/// Rollouts as the planner leaves them, one per situation a health check must tell apart.
fn recorded() -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();

    let mut w = settled_world(4, STEPS);
    out.push(("healthy", record(&w)));

    let mut spec_changed = record(&w);
    spec_changed["metadata"]["generation"] = json!(2);
    out.push(("spec-change-not-observed", spec_changed));

    update(&mut w);
    w.reconcile();
    out.push(("progressing", record(&w)));

    until(&mut w, 20, "analysis run", |w| !w.analysis_runs.is_empty());
    out.push(("progressing-analysis", record(&w)));

    w.set_run_phase(
        AnalysisRunKind::Step(1),
        AnalysisPhase::Inconclusive,
        "neither",
    );
    until(&mut w, 5, "inconclusive pause", |w| phase(w) == "Paused");
    out.push(("paused-inconclusive", record(&w)));

    w.promote();
    until(&mut w, 30, "pause step", |w| {
        phase(w) == "Paused" && step(w) == Some(3)
    });
    out.push(("paused-step", record(&w)));

    w.rollout.spec.paused = Some(true);
    bump_generation(&mut w);
    w.reconcile();
    out.push(("paused-by-user", record(&w)));

    w.rollout.spec.paused = None;
    bump_generation(&mut w);
    w.abort();
    until(&mut w, 10, "aborted", |w| phase(w) == "Degraded");
    out.push(("degraded-aborted", record(&w)));

    let mut w = settled_world(4, STEPS);
    w.rollout.spec.progress_deadline_seconds = Some(60);
    bump_generation(&mut w);
    w.reconcile();
    update(&mut w);
    let canary = hash_of(&w);
    w.never_ready.insert(canary);
    for _ in 0..70 {
        tick(&mut w, 1);
    }
    assert_eq!(phase(&w), "Degraded");
    out.push(("degraded-progress-deadline", record(&w)));

    let mut w = settled_world(4, STEPS);
    w.rollout.spec.strategy.canary.as_mut().unwrap().steps[0].set_weight = Some(250);
    bump_generation(&mut w);
    w.advance(Duration::from_secs(1));
    w.reconcile();
    out.push(("degraded-invalid-spec", record(&w)));

    // Blue-green: the preview coming up, the pause before the switch, the post-promotion
    // analysis after it, and an abort that switched back.
    let bg = "activeService: web-active\npreviewService: web-preview\nautoPromotionEnabled: false\npostPromotionAnalysis: {templates: [{templateName: t}]}\n";
    let mut w = settled_blue_green_world(4, bg);
    out.push(("blue-green-healthy", record(&w)));
    w.pods_ready_per_tick = Some(1);
    update(&mut w);
    w.reconcile();
    out.push(("blue-green-progressing-preview", record(&w)));
    until(&mut w, 20, "blue-green pause", |w| phase(w) == "Paused");
    out.push(("blue-green-paused", record(&w)));
    w.promote();
    until(&mut w, 20, "post-promotion analysis", |w| {
        !w.analysis_runs.is_empty()
    });
    assert_eq!(phase(&w), "Progressing");
    out.push(("blue-green-post-promotion-analysis", record(&w)));
    w.set_run_phase(
        AnalysisRunKind::PostPromotion,
        AnalysisPhase::Failed,
        "errors",
    );
    until(&mut w, 5, "aborted", |w| phase(w) == "Degraded");
    out.push(("blue-green-degraded-aborted", record(&w)));

    for (name, ro) in &out {
        assert!(ro["status"].is_object(), "{name}: no status");
    }
    out
}

fn ensure_lua() -> &'static str {
    require_tool("lua5.4", "lua5.4");
    "lua5.4"
}

/// A Lua constructor for a JSON value; arrays carry the ARRAY metatable so that they encode
/// back as arrays even when empty.
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b" .,:-_/()%+=".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("\\{b:03}"));
                }
            }
            out.push('"');
            out
        }
        Value::Array(a) => format!(
            "arr({{{}}})",
            a.iter().map(lua_literal).collect::<Vec<_>>().join(",")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}]={}", lua_literal(&json!(k)), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

const HARNESS: &str = r#"
ARRAY = {}
function arr(t) return setmetatable(t, ARRAY) end
local function enc(v)
  local t = type(v)
  if t == "nil" then return "null"
  elseif t == "boolean" then return tostring(v)
  elseif t == "number" then
    if math.type(v) == "integer" then return string.format("%d", v) end
    return string.format("%.17g", v)
  elseif t == "string" then
    return '"' .. (v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end)) .. '"'
  elseif t == "table" then
    local out = {}
    if getmetatable(v) == ARRAY then
      for i = 1, #v do out[#out + 1] = enc(v[i]) end
      return "[" .. table.concat(out, ",") .. "]"
    end
    for k, x in pairs(v) do out[#out + 1] = enc(tostring(k)) .. ":" .. enc(x) end
    return "{" .. table.concat(out, ",") .. "}"
  end
  error("cannot encode a " .. t)
end
function run(script, make)
  obj = make()
  local f = assert(load(script, "script", "t"))
  print(enc(f()))
end
"#;

/// Runs each script on a fresh copy of `obj`; returns each script's result as JSON.
fn run_lua(obj: &Value, scripts: &[&str]) -> Vec<Value> {
    let mut program = String::from(HARNESS);
    program.push_str(&format!(
        "local function make() return {} end\n",
        lua_literal(obj)
    ));
    for s in scripts {
        assert!(!s.contains("]==]"));
        program.push_str(&format!("run([==[{s}]==], make)\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.lua");
    std::fs::write(&path, &program).unwrap();
    let out = Command::new(ensure_lua()).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "lua failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), scripts.len());
    lines
}

struct ArgoCd {
    health: String,
    discovery: String,
    actions: BTreeMap<String, String>,
}

fn argocd() -> ArgoCd {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/sluice/argocd/argocd-cm.yaml");
    let cm: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = &cm["data"];
    let health = data["resource.customizations.health.sluice.dev_Rollout"]
        .as_str()
        .expect("health key")
        .to_string();
    let actions: Value = serde_yaml::from_str(
        data["resource.customizations.actions.sluice.dev_Rollout"]
            .as_str()
            .expect("actions key"),
    )
    .unwrap();
    let discovery = actions["discovery.lua"].as_str().unwrap().to_string();
    let actions = actions["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["action.lua"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    ArgoCd {
        health,
        discovery,
        actions,
    }
}

#[test]
fn argocd_health_maps_every_phase_with_its_message() {
    let cd = argocd();
    let mut seen = BTreeMap::new();
    for (name, ro) in recorded() {
        let hs = &run_lua(&ro, &[&cd.health])[0];
        let st = &ro["status"];
        let (want, message) = if name == "spec-change-not-observed" {
            (
                "Progressing",
                json!("Waiting for rollout spec update to be observed"),
            )
        } else {
            let want = match st["phase"].as_str().unwrap() {
                "Healthy" => "Healthy",
                "Progressing" => "Progressing",
                "Paused" => "Suspended",
                "Degraded" => "Degraded",
                other => panic!("{name}: unknown phase {other}"),
            };
            (want, json!(st["message"].as_str().unwrap_or("")))
        };
        assert_eq!(hs["status"], want, "{name}: {hs}\nstatus: {st:#}");
        assert_eq!(hs["message"], message, "{name}");
        seen.insert(want, name);
    }
    assert_eq!(
        seen.len(),
        4,
        "every Argo CD health status is covered: {seen:?}"
    );
    // The messages say why: the step analysis, the abort, the deadline.
    let by_name: BTreeMap<_, _> = recorded().into_iter().collect();
    let msg = |n: &str| run_lua(&by_name[n], &[&cd.health])[0]["message"].clone();
    assert!(
        msg("degraded-progress-deadline")
            .as_str()
            .unwrap()
            .contains("ProgressDeadlineExceeded")
    );
    assert!(
        msg("degraded-invalid-spec")
            .as_str()
            .unwrap()
            .contains("InvalidSpec")
    );
    assert!(!msg("degraded-aborted").as_str().unwrap().is_empty());
    assert!(!msg("paused-inconclusive").as_str().unwrap().is_empty());
}

#[test]
fn argocd_health_of_a_rollout_never_reconciled_is_progressing() {
    let cd = argocd();
    let ro = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "generation": 1}, "spec": {}});
    let hs = &run_lua(&ro, &[&cd.health])[0];
    assert_eq!(hs["status"], "Progressing");
}

/// Drops nulls, as a JSON merge patch (and Lua's nil) does.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn argocd_actions_make_the_same_patches_as_the_cli() {
    let cd = argocd();
    let names: Vec<&str> = cd.actions.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "abort",
            "pause",
            "promote",
            "promote-full",
            "resume",
            "retry"
        ]
    );
    let cli = |name: &str| match name {
        "promote" => Action::Promote { full: false },
        "promote-full" => Action::Promote { full: true },
        "abort" => Action::Abort,
        "retry" => Action::Retry,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        other => panic!("{other}"),
    };
    let mut enabled_somewhere = BTreeMap::new();
    for (case, ro_json) in recorded() {
        if case == "spec-change-not-observed" {
            continue;
        }
        let ro: sluice::api::rollout::Rollout = serde_json::from_value(ro_json.clone()).unwrap();
        let mut scripts = vec![cd.discovery.as_str()];
        scripts.extend(cd.actions.values().map(String::as_str));
        let results = run_lua(&ro_json, &scripts);
        let discovery = &results[0];
        for ((name, _), lua_result) in cd.actions.iter().zip(&results[1..]) {
            let planned = plan(&ro, &[], &cli(name));
            let disabled = discovery[name.as_str()]["disabled"].as_bool().unwrap();
            assert_eq!(
                disabled,
                planned.is_err(),
                "{case}: action {name} disabled={disabled}, CLI says {planned:?}"
            );
            let Ok(p) = planned else { continue };
            *enabled_somewhere.entry(name.clone()).or_insert(0) += 1;
            let mut want = ro_json.clone();
            for patch in [&p.spec_patch, &p.status_patch].into_iter().flatten() {
                json_patch::merge(&mut want, patch);
            }
            assert!(p.json_patch.is_none());
            assert_eq!(
                without_nulls(lua_result),
                without_nulls(&want),
                "{case}: action {name} differs from `sluice {name}` ({p:?})"
            );
        }
    }
    assert_eq!(
        enabled_somewhere.len(),
        6,
        "each action is exercised on some recorded rollout: {enabled_somewhere:?}"
    );
}

/// kstatus' status of a generic resource (sigs.k8s.io/cli-utils `kstatus`, as Flux uses it):
/// Terminating when deleted; InProgress while `status.observedGeneration` lags
/// `metadata.generation`; then from the standard conditions: `Reconciling=True` is InProgress,
/// `Stalled=True` is Failed; otherwise Current.
fn kstatus(obj: &Value) -> &'static str {
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating";
    }
    let st = &obj["status"];
    if let Some(observed) = st.get("observedGeneration") {
        // kstatus reads it as an integer; a string (Argo Rollouts' type) is an error there.
        let observed = observed
            .as_i64()
            .expect("status.observedGeneration must be an integer for kstatus");
        if Some(observed) != obj["metadata"]["generation"].as_i64() {
            return "InProgress";
        }
    }
    for c in st["conditions"].as_array().into_iter().flatten() {
        match (c["type"].as_str(), c["status"].as_str()) {
            (Some("Reconciling"), Some("True")) => return "InProgress",
            (Some("Stalled"), Some("True")) => return "Failed",
            _ => {}
        }
    }
    "Current"
}

#[test]
fn kstatus_sees_each_phase_as_flux_should() {
    for (case, ro) in recorded() {
        let st = &ro["status"];
        let conds: BTreeMap<&str, &str> = st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        let trues = ["Ready", "Reconciling", "Stalled"]
            .iter()
            .filter(|t| conds.get(*t) == Some(&"True"))
            .count();
        assert_eq!(
            trues, 1,
            "{case}: exactly one of Ready/Reconciling/Stalled: {conds:?}"
        );
        let want = if case == "spec-change-not-observed" {
            "InProgress"
        } else {
            match st["phase"].as_str().unwrap() {
                "Healthy" => "Current",
                // A Flux health check waits through pauses (and times out on an indefinite one).
                "Progressing" | "Paused" => "InProgress",
                "Degraded" => "Failed",
                other => panic!("{other}"),
            }
        };
        assert_eq!(kstatus(&ro), want, "{case}: {st:#}");
        // Ready=True exactly when kstatus says Current (Flux's own kinds are read this way).
        if case != "spec-change-not-observed" {
            assert_eq!(conds["Ready"] == "True", want == "Current", "{case}");
        }
    }
}
