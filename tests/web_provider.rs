//! The web metric provider against a real HTTP server on loopback, started by each test: JSON
//! answers through `jsonPath` pass and fail conditions; a 500, a timeout, a body that is not
//! JSON, a missing path, a URL off the allowlist and a redirect each give their stated outcome;
//! Secret values never appear in status, Events or logs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use sluice::analysis::args::SecretValues;
use sluice::analysis::run::{ProviderRequest, begin};
use sluice::api::analysis::{AnalysisRun, AnalysisRunSpec, AnalysisRunStatus, SecretKeyRef};
use sluice::api::common::AnalysisPhase;
use sluice::metrics::prometheus::AddressAllowlist;
use sluice::metrics::web::WebProvider;
use sluice_test_support::controller::*;

/// The token a Secret holds; it is sent as a header and the server echoes it in its errors.
const TOKEN: &str = "tok-web-7f3a9c21";

/// A server with one route per outcome; `hits` counts every request it received.
async fn server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            get(|| async { axum::Json(serde_json::json!({"data": {"ok": true, "rate": 0.99}})) }),
        )
        .route(
            "/bad",
            get(|| async { axum::Json(serde_json::json!({"data": {"ok": false, "rate": 0.42}})) }),
        )
        .route(
            "/auth",
            get(|headers: HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if auth == format!("Bearer {TOKEN}") {
                    axum::Json(serde_json::json!({"ok": true})).into_response()
                } else {
                    (StatusCode::UNAUTHORIZED, format!("bad credentials {auth}")).into_response()
                }
            }),
        )
        .route(
            "/fail",
            get(|headers: HeaderMap| async move {
                // Echoes what it was sent, as careless servers do.
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error handling {auth}: {}", "x".repeat(2000)),
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/text", get(|| async { "I am OK" }))
        .route("/broken", get(|| async { "{\"data\": {\"ok\": tru" }))
        .route(
            "/redirect",
            get(|| async { (StatusCode::FOUND, [("location", "/ok")]) }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let parsed: serde_json::Value =
                    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                axum::Json(serde_json::json!({"contentType": ct, "sent": parsed}))
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), hits)
}

fn run_spec(yaml: &str) -> AnalysisRunSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn token_secret() -> SecretValues {
    BTreeMap::from([(
        SecretKeyRef {
            name: "web-token".into(),
            key: "token".into(),
        },
        TOKEN.to_string(),
    )])
}

/// One measurement of a one-metric run: the metric's status after it.
async fn measure_once(
    provider: &WebProvider,
    spec: &AnalysisRunSpec,
    secrets: &SecretValues,
) -> AnalysisRunStatus {
    let now = jiff::Timestamp::now();
    let pass = begin(spec, None, secrets, now);
    let mut results = Vec::new();
    for req in pass.requests.clone() {
        let ProviderRequest::Web(w) = &req.provider else {
            panic!("not a web request: {req:?}");
        };
        let answer = provider.measure(w).await;
        results.push(req.into_result(now, now, answer));
    }
    pass.finish(results, now).status
}

fn metric_yaml(url: &str, condition: &str, extra: &str) -> String {
    format!(
        r#"
args:
- name: token
  valueFrom: {{secretKeyRef: {{name: web-token, key: token}}}}
metrics:
- name: web
  successCondition: "{condition}"
  provider:
    web:
      url: "{url}"
      timeoutSeconds: 1
      headers:
      - key: Authorization
        value: "Bearer {{{{args.token}}}}"
{extra}
"#
    )
}

fn only_measurement(st: &AnalysisRunStatus) -> &sluice::api::analysis::Measurement {
    let r = &st.metric_results[0];
    assert_eq!(r.measurements.len(), 1, "{st:#?}");
    &r.measurements[0]
}

#[tokio::test]
async fn json_answers_pass_and_fail_conditions_through_json_path() {
    let (base, _) = server().await;
    let web = WebProvider::new(AddressAllowlist::new([base.as_str()]).unwrap()).unwrap();
    let ok = run_spec(&metric_yaml(
        &format!("{base}/ok"),
        "result.ok && result.rate >= 0.95",
        "      jsonPath: \"{$.data}\"",
    ));
    let st = measure_once(&web, &ok, &token_secret()).await;
    let m = only_measurement(&st);
    assert_eq!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.value.as_deref(), Some(r#"{"ok":true,"rate":0.99}"#));
    assert_eq!(st.phase, AnalysisPhase::Successful);

    let bad = run_spec(&metric_yaml(
        &format!("{base}/bad"),
        "result == true",
        "      jsonPath: \"{$.data.ok}\"",
    ));
    let st = measure_once(&web, &bad, &token_secret()).await;
    let m = only_measurement(&st);
    assert_eq!(m.phase, AnalysisPhase::Failed, "{m:?}");
    assert_eq!(m.value.as_deref(), Some("false"));
    assert_eq!(st.phase, AnalysisPhase::Failed);

    let rate = run_spec(&metric_yaml(
        &format!("{base}/bad"),
        "result >= 0.95",
        "      jsonPath: \"{$.data.rate}\"",
    ));
    let st = measure_once(&web, &rate, &token_secret()).await;
    let m = only_measurement(&st);
    assert_eq!(m.phase, AnalysisPhase::Failed);
    assert_eq!(m.message.as_deref(), Some("0.42 is not >= 0.95"));

    // The Secret-backed header reaches the server.
    let auth = run_spec(&metric_yaml(
        &format!("{base}/auth"),
        "result == true",
        "      jsonPath: \"{$.ok}\"",
    ));
    let st = measure_once(&web, &auth, &token_secret()).await;
    assert_eq!(only_measurement(&st).phase, AnalysisPhase::Successful);
}

#[tokio::test]
async fn a_plain_text_answer_is_the_result_as_text_and_broken_json_too() {
    let (base, _) = server().await;
    let web = WebProvider::new(AddressAllowlist::new([base.as_str()]).unwrap()).unwrap();
    let text = run_spec(&metric_yaml(
        &format!("{base}/text"),
        "result == 'I am OK'",
        "",
    ));
    let st = measure_once(&web, &text, &token_secret()).await;
    assert_eq!(only_measurement(&st).phase, AnalysisPhase::Successful);
    // As in Argo Rollouts, a body that is not JSON is the result as text: a condition that
    // expects a field of a document cannot be met by it, and the measurement errors.
    let broken = run_spec(&metric_yaml(
        &format!("{base}/broken"),
        "result.ok == true",
        "      jsonPath: \"{$.data}\"",
    ));
    let st = measure_once(&web, &broken, &token_secret()).await;
    let m = only_measurement(&st);
    assert_ne!(m.phase, AnalysisPhase::Successful, "{m:?}");
    assert_eq!(m.phase, AnalysisPhase::Error, "{m:?}");
}

#[tokio::test]
async fn errors_say_what_went_wrong_and_never_pass() {
    let (base, hits) = server().await;
    let web = WebProvider::new(AddressAllowlist::new([base.as_str()]).unwrap()).unwrap();
    let cases = [
        (
            format!("{base}/fail"),
            "",
            "answered HTTP 500 (not 2xx): internal error handling Bearer *****",
        ),
        (
            format!("{base}/slow"),
            "",
            "did not answer within 1s (timeoutSeconds)",
        ),
        (
            format!("{base}/ok"),
            "      jsonPath: \"{$.data.missing}\"",
            "could not find jsonPath {$.data.missing} in the answer: missing is not found",
        ),
        (
            format!("{base}/redirect"),
            "",
            "answered HTTP 302 redirecting to \"/ok\"; redirects are not followed",
        ),
    ];
    for (url, extra, expected) in cases {
        let spec = run_spec(&metric_yaml(&url, "result == true", extra));
        let st = measure_once(&web, &spec, &token_secret()).await;
        let m = only_measurement(&st);
        assert_eq!(m.phase, AnalysisPhase::Error, "{url}: {m:?}");
        let message = m.message.clone().unwrap_or_default();
        assert!(message.contains(expected), "{url}: {message}");
        assert!(!message.contains(TOKEN), "{url}: {message}");
        // The body excerpt is bounded.
        assert!(message.len() < 600, "{url}: {} chars", message.len());
    }
    // The redirect was answered by the server once and not followed to /ok.
    let before = hits.load(Ordering::SeqCst);
    let off = format!("http://127.0.0.2:{}/ok", base.rsplit(':').next().unwrap());
    let spec = run_spec(&metric_yaml(&off, "result == true", ""));
    let st = measure_once(&web, &spec, &token_secret()).await;
    let m = only_measurement(&st);
    assert_eq!(m.phase, AnalysisPhase::Error);
    assert!(
        m.message
            .as_deref()
            .unwrap_or_default()
            .contains("is not in the controller's allowlist of metric provider addresses"),
        "{m:?}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "nothing sent off the list"
    );
}

#[tokio::test]
async fn post_sends_the_json_body_as_json() {
    let (base, _) = server().await;
    let web = WebProvider::new(AddressAllowlist::new([base.as_str()]).unwrap()).unwrap();
    let spec = run_spec(&metric_yaml(
        &format!("{base}/echo"),
        "result.contentType == 'application/json' && result.sent.service == 'checkout'",
        "      method: POST\n      jsonBody: {service: checkout}",
    ));
    let st = measure_once(&web, &spec, &token_secret()).await;
    assert_eq!(
        only_measurement(&st).phase,
        AnalysisPhase::Successful,
        "{st:?}"
    );
    // A body on a GET is refused before anything is sent.
    let spec = run_spec(&metric_yaml(
        &format!("{base}/ok"),
        "result == true",
        "      body: hello",
    ));
    let u = begin(&spec, None, &token_secret(), jiff::Timestamp::now());
    assert!(u.requests.is_empty());
    let st = u.finish(vec![], jiff::Timestamp::now()).status;
    assert_eq!(st.phase, AnalysisPhase::Error);
    assert_eq!(
        st.message.as_deref(),
        Some("metric \"web\": provider.web.body: a body can only be sent with POST or PUT")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_measures_web_metrics_and_never_shows_the_secret() {
    sluice_test_support::logs::capture();
    let (base, _) = server().await;
    let env = Env::with_config(prometheus_config(&base, None)).await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), env.ns());
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-token"},
                "stringData": {"token": TOKEN}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let runs: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    let mut names = Vec::new();
    for (name, path, cond) in [
        ("web-pass", "/auth", "result == true"),
        ("web-error", "/fail", "result == true"),
    ] {
        let spec = metric_yaml(&format!("{base}{path}"), cond, "      jsonPath: \"{$.ok}\"")
            .replace("- name: web\n", "- name: web\n  consecutiveErrorLimit: 0\n");
        let mut run = AnalysisRun::new(name, run_spec(&spec));
        run.metadata.namespace = Some(env.ns().to_string());
        runs.create(&PostParams::default(), &run).await.unwrap();
        names.push(name);
    }
    let mut finished = Vec::new();
    for name in &names {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let r = runs.get(name).await.unwrap();
            if r.status.as_ref().is_some_and(|s| s.phase.is_completed()) {
                finished.push(r);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not complete: {:?}",
                r.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(
        finished[0].status.as_ref().unwrap().phase,
        AnalysisPhase::Successful
    );
    let errored = finished[1].status.as_ref().unwrap();
    assert_eq!(errored.phase, AnalysisPhase::Error, "{errored:?}");
    assert!(
        errored
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("answered HTTP 500"),
        "{errored:?}"
    );
    for r in &finished {
        let text = serde_json::to_string(&r.status).unwrap();
        assert!(!text.contains(TOKEN), "status of {}: {text}", r.name_any());
    }
    let events: Api<EventV1> = Api::namespaced(env.client.clone(), env.ns());
    let all = events.list(&ListParams::default()).await.unwrap().items;
    assert!(
        all.iter()
            .any(|e| e.note.as_deref().unwrap_or_default().contains("HTTP 500")),
        "the error is reported as an Event: {all:?}"
    );
    for e in &all {
        let text = serde_json::to_string(e).unwrap();
        assert!(!text.contains(TOKEN), "event: {text}");
    }
    let logged = sluice_test_support::logs::text();
    assert!(logged.contains("web-error"), "logs are captured: {logged}");
    assert!(!logged.contains(TOKEN), "logs: {logged}");
}
