//! `sluice dashboard` in a real headless Chromium, driven through chromedriver (WebDriver),
//! against the test cluster with the controller running: the overview lists and filters
//! rollouts; a rollout page shows the step ladder, a plotted analysis and the live weight as
//! the controller steps, without a reload; promote and abort (confirmed in the page's dialog)
//! move the rollout; hostile text from the cluster stays text; a user whose patch is refused
//! sees the API server's RBAC error.
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver`, installed by
//! `e2e/run-tests.sh` (and by the test itself when missing); a test fails, never skips, without
//! them. Screenshots of the overview and of the aborted rollout are written to
//! `target/dashboard-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use sluice::api::analysis::AnalysisRun;
use sluice_e2e::Fault;
use sluice_test_support::controller::*;
use sluice_test_support::tools::require_tool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// How long the page may take to show what the cluster did (a loaded machine).
const PATIENCE: Duration = Duration::from_secs(60);

/// chromedriver and the browser session it drives; both end when dropped.
struct Browser {
    client: Client,
    _driver: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

async fn browser() -> Result<Browser> {
    let chromium = require_tool("chromium", "chromium");
    let chromedriver = require_tool("chromedriver", "chromium-driver");
    let port = free_port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("chromedriver could not be started: {e}"))?;
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800"]
        }
    }))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let connected =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await;
        match connected {
            Ok(client) => {
                return Ok(Browser {
                    client,
                    _driver: driver,
                });
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(
                    format!("chromedriver on port {port} never took a session: {e}").into(),
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `sluice dashboard --port 0` with `kubeconfig`; its URL is the one it prints.
async fn dashboard(kubeconfig: &Path, extra: &[&str]) -> Result<(Child, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["dashboard", "--port", "0"])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .map_err(|_| "the dashboard printed no URL within 60s")??
        .ok_or("the dashboard exited before printing its URL")?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .ok_or_else(|| format!("no URL in {line:?}"))?
        .trim_end_matches('/')
        .to_string();
    Ok((child, url))
}

/// Polls `f` until it gives a value (the test's patience, not the page's: the page itself is
/// pushed to).
async fn until<T, F, Fut>(what: &str, f: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last_err = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = e.to_string(),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out waiting for {what} {last_err}").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The text of the element at `css`, read in one script: the live part may be swapped between
/// a find and a read.
async fn text_of(c: &Client, css: &str) -> Result<String> {
    let text = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            vec![json!(css)],
        )
        .await?;
    text.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no element {css}").into())
}

/// Counts the elements at `css`, in one script.
async fn count(c: &Client, css: &str) -> Result<u64> {
    let n = c
        .execute(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )
        .await?;
    n.as_u64()
        .ok_or_else(|| format!("no count for {css}").into())
}

/// Waits until the element at `css` shows text containing `wanted`.
async fn wait_text(c: &Client, css: &str, wanted: &str) -> Result<String> {
    until(&format!("{css} to show {wanted:?}"), || async {
        let t = text_of(c, css).await.unwrap_or_default();
        Ok(t.contains(wanted).then_some(t))
    })
    .await
}

fn screenshots() -> PathBuf {
    let dir = sluice_test_support::repo_root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// Clicks the action button, confirms in the dialog, and returns the answer shown.
async fn act(c: &Client, action: &str) -> Result<String> {
    c.find(Locator::Css(&format!("button[data-action='{action}']")))
        .await?
        .click()
        .await?;
    let ok = c.find(Locator::Css("dialog#confirm #confirm-ok")).await?;
    assert!(ok.is_displayed().await?, "the confirmation dialog is open");
    let question = text_of(c, "#confirm-text").await?;
    assert!(question.contains("default/web"), "{question}");
    ok.click().await?;
    until(&format!("the answer to {action}"), || async {
        let t = text_of(c, "#result").await?;
        Ok((t.starts_with("Done") || t.starts_with("Failed")).then_some(t))
    })
    .await
}

const WEB_STEPS: &str = "steps:\n- setWeight: 20\n- pause: {}\n- setWeight: 50\n- pause: {}\n";

/// An AnalysisRun of the current revision of `web` whose three measurements (one failed)
/// are all taken: the controller has nothing left to measure.
async fn analysis_run(env: &Env, hash: &str, uid: &str) -> Result {
    let api: Api<AnalysisRun> = Api::namespaced(env.client.clone(), env.ns());
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "web-success", "labels": {"rollout.sluice.dev/pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
                "name": "web", "uid": uid, "controller": true}]},
        "spec": {"metrics": [{"name": "success-rate", "count": 3, "failureLimit": 2,
            "interval": "1h", "initialDelay": "1h",
            "successCondition": "result[0] >= 0.95",
            "provider": {"prometheus": {"address": "http://127.0.0.1:1", "query": "up"}}}]}
    }))?;
    api.create(&PostParams::default(), &run).await?;
    let m = |at: &str, v: &str, phase: &str| json!({"phase": phase, "value": v, "startedAt": at, "finishedAt": at});
    let status = json!({"status": {"phase": "Successful",
        "message": "<img src=x onerror=\"window.__xss=1\"> run message",
        "metricResults": [{"name": "success-rate", "phase": "Successful", "count": 3,
            "successful": 2, "failed": 1,
            "measurements": [m("2026-01-01T00:00:00Z", "[0.99]", "Successful"),
                             m("2026-01-01T00:01:00Z", "[0.80]", "Failed"),
                             m("2026-01-01T00:02:00Z", "[0.97]", "Successful")]}]}});
    api.patch_status(
        "web-success",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await?;
    Ok(())
}

/// An Event about `web` whose note is a script, as any client allowed to write Events could
/// make one.
async fn hostile_event(env: &Env, uid: &str) -> Result {
    let api: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "web.hostile"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "example.com/else", "reportingInstance": "x",
        "action": "Test", "reason": "Hostile", "type": "Normal",
        "note": "<script>window.__xss=2</script><img src=x onerror=\"window.__xss=3\">",
        "regarding": {"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
            "namespace": env.ns(), "uid": uid}
    }))?;
    api.create(&PostParams::default(), &event).await?;
    Ok(())
}

#[tokio::test]
async fn dashboard_in_a_browser_lists_plots_promotes_and_aborts_live() -> Result {
    if skip_on_real_cluster("writes AnalysisRun status by hand") {
        return Ok(());
    }
    let env = Env::new().await;
    env.services(&["web-canary", "web-stable"]).await;
    env.stable_ingress().await;
    env.create(&rollout("web", 2, "web:1", &format!("{NGINX}{WEB_STEPS}")))
        .await;
    // A second rollout in another namespace, for the filters.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}}))?,
        )
        .await?;
    // Its image is markup: the overview must show it as text.
    let mut api_rollout = serde_json::to_value(rollout(
        "api",
        1,
        "api:1<img src=x onerror=\"window.__xss=4\">",
        "steps:\n- setWeight: 50\n- pause: {}\n",
    ))?;
    api_rollout["metadata"]["namespace"] = json!("other");
    Api::<sluice::api::rollout::Rollout>::namespaced(env.client.clone(), "other")
        .create(
            &PostParams::default(),
            &serde_json::from_value(api_rollout)?,
        )
        .await?;
    let web = env
        .wait_for("web", "web healthy", 60, |r| phase(r) == "Healthy")
        .await;
    let hash = current(&web).ok_or("web has a current pod hash")?;
    let uid = web.uid().ok_or("web has a uid")?;
    analysis_run(&env, &hash, &uid).await?;
    hostile_event(&env, &uid).await?;

    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    env.cluster.write_kubeconfig(&kubeconfig)?;
    let (_dash, url) = dashboard(&kubeconfig, &["-A"]).await?;
    let b = browser().await?;
    let c = &b.client;

    // Overview: both rollouts, then only the one the filter names.
    c.goto(&format!("{url}/")).await?;
    wait_text(c, "table.rollouts", "api").await?;
    assert_eq!(count(c, "table.rollouts tbody tr").await?, 2);
    assert!(
        text_of(c, "tr[data-rollout='web']")
            .await?
            .contains("Healthy")
    );
    assert_eq!(
        text_of(c, "tr[data-rollout='web'] td.weight").await?,
        "100% / 100%",
        "fully promoted, the stable version takes all traffic"
    );
    assert!(
        text_of(c, "tr[data-rollout='api']")
            .await?
            .contains("api:1<img src=x onerror="),
        "the image is shown as text"
    );
    let xss = c
        .execute("return window.__xss === undefined;", vec![])
        .await?;
    assert_eq!(xss, json!(true), "no script from the cluster ran");
    std::fs::write(screenshots().join("overview.png"), c.screenshot().await?)?;
    let shown = || async {
        let names = c
            .execute(
                "return [...document.querySelectorAll('table.rollouts tbody tr')]\
                 .map(r => r.dataset.rollout);",
                vec![],
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(names)
    };
    c.find(Locator::Css("select[name='ns']"))
        .await?
        .select_by_value("other")
        .await?;
    c.find(Locator::Css("form.filter button[type='submit']"))
        .await?
        .click()
        .await?;
    until("the overview of namespace other", || async {
        Ok((shown().await? == json!(["api"])).then_some(()))
    })
    .await?;
    c.goto(&format!("{url}/")).await?;
    c.find(Locator::Css("input[name='q']"))
        .await?
        .send_keys("WEB:1")
        .await?;
    c.find(Locator::Css("form.filter button[type='submit']"))
        .await?
        .click()
        .await?;
    until("the overview filtered by image", || async {
        Ok((shown().await? == json!(["web"])).then_some(()))
    })
    .await?;

    // The rollout page: the ladder, the plotted analysis with its threshold, hostile text as
    // text.
    c.find(Locator::LinkText("web")).await?;
    c.goto(&format!("{url}/rollouts/default/web")).await?;
    wait_text(c, "#conn", "live").await?;
    assert_eq!(count(c, "ol.ladder li").await?, 4);
    let chart = "svg.chart[data-metric='success-rate']";
    let points = c
        .execute(
            "return document.querySelector(arguments[0]).getAttribute('data-points');",
            vec![json!(chart)],
        )
        .await?;
    assert_eq!(points, json!("3"));
    assert_eq!(
        count(c, &format!("{chart} .point")).await?,
        3,
        "one mark per measurement"
    );
    assert_eq!(count(c, &format!("{chart} .point.failed")).await?, 1);
    assert_eq!(
        count(c, &format!("{chart} line.threshold[data-threshold='0.95']")).await?,
        1,
        "the threshold line"
    );
    let shot = until("a screenshot of the chart", || async {
        let element = c.find(Locator::Css(chart)).await?;
        Ok(Some(element.screenshot().await?))
    })
    .await?;
    std::fs::write(screenshots().join("analysis.png"), shot)?;
    let events = text_of(c, "table.events").await?;
    assert!(
        events.contains("<script>window.__xss=2</script>"),
        "{events}"
    );
    assert!(
        text_of(c, "article.run")
            .await?
            .contains("<img src=x onerror="),
        "the run's message is shown as text"
    );
    let xss = c
        .execute("return window.__xss === undefined;", vec![])
        .await?;
    assert_eq!(xss, json!(true), "no script from the cluster ran");

    // The controller steps; the page follows without a reload (the marker survives).
    c.execute("window.__marker = 'same page';", vec![]).await?;
    env.set_image("web", "web:2").await;
    wait_text(c, "#actual-weight", "20%").await?;
    wait_text(c, "ol.ladder li.current", "pause").await?;
    assert!(
        text_of(c, "ol.ladder li.current")
            .await?
            .contains("until promoted"),
        "the current step says it waits for a promotion"
    );

    // Promote, confirmed: the next step's weight shows up.
    let answer = act(c, "promote").await?;
    assert!(answer.starts_with("Done"), "{answer}");
    wait_text(c, "#actual-weight", "50%").await?;
    wait_text(
        c,
        "ul.router li[data-name='web-web-canary']",
        "canary-weight 50",
    )
    .await?;
    assert_eq!(env.nginx_weight("web").await, Some(50));

    // Abort: weight 0, Degraded with the reason.
    let answer = act(c, "abort").await?;
    assert!(answer.starts_with("Done"), "{answer}");
    wait_text(c, "#actual-weight", "0%").await?;
    wait_text(c, "main h1", "Degraded").await?;
    wait_text(c, "#explanation", "Aborted").await?;
    let marker = c.execute("return window.__marker;", vec![]).await?;
    assert_eq!(marker, json!("same page"), "the page was never reloaded");
    let pushes = c
        .execute(
            "return Number(document.getElementById('live').dataset.updates || 0);",
            vec![],
        )
        .await?;
    assert!(
        pushes.as_u64().unwrap_or(0) >= 3,
        "pushed updates: {pushes}"
    );
    // The whole page, not only the first screen.
    c.set_window_size(1280, 2400).await?;
    std::fs::write(screenshots().join("aborted.png"), c.screenshot().await?)?;

    // Narrow screens still show the page without sideways scrolling of the whole document.
    c.set_window_size(400, 800).await?;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await?;
    assert_eq!(overflow, json!(true), "the page fits a narrow screen");

    b.client.clone().close().await?;
    Ok(())
}

#[tokio::test]
async fn a_refused_action_shows_the_rbac_error() -> Result {
    if skip_on_real_cluster("needs fault injection (the test cluster does not enforce RBAC)") {
        return Ok(());
    }
    let env = Env::new().await;
    env.create(&rollout(
        "web",
        1,
        "web:1",
        "steps:\n- setWeight: 50\n- pause: {duration: 1h}\n",
    ))
    .await;
    env.wait_for("web", "web healthy", 60, |r| phase(r) == "Healthy")
        .await;
    env.set_image("web", "web:2").await;
    env.wait_for("web", "web paused", 60, |r| phase(r) == "Paused")
        .await;
    // The test cluster does not enforce RBAC: the API server's 403 for this user's patches is
    // injected, as kube-apiserver would answer a user without the verb.
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    let yaml = env
        .cluster
        .controls()
        .kubeconfig_yaml()
        .replace("  user: {}\n", "  user:\n    as: viewer\n");
    std::fs::write(&kubeconfig, yaml)?;
    env.cluster.controls().inject(
        Fault::fail(403)
            .verb("patch")
            .resource("rollouts")
            .identity("viewer")
            .times(100),
    );
    let (_dash, url) = dashboard(&kubeconfig, &[]).await?;
    let b = browser().await?;
    let c = &b.client;
    c.goto(&format!("{url}/rollouts/default/web")).await?;
    wait_text(c, "main h1", "Paused").await?;
    // The timed pause counts down in the page.
    let left = text_of(c, "ol.ladder li.current .pause-left").await?;
    assert!(
        left.starts_with("59m") && left.ends_with("s left"),
        "time left in the pause: {left:?}"
    );
    // By keyboard alone: Enter on the focused button opens the dialog with Confirm focused,
    // Enter confirms; later, Escape cancels without a request.
    let key = |k: Key| async move {
        c.active_element().await?.send_keys(&k).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    c.execute(
        "document.querySelector(\"button[data-action='abort']\").focus();",
        vec![],
    )
    .await?;
    key(Key::Enter).await?;
    key(Key::Enter).await?;
    let answer = until("the answer to abort", || async {
        let t = text_of(c, "#result").await?;
        Ok((t.starts_with("Done") || t.starts_with("Failed")).then_some(t))
    })
    .await?;
    assert!(
        answer.starts_with("Failed: forbidden: not allowed to patch rollouts"),
        "{answer}"
    );
    assert!(answer.contains("ask for RBAC verb \"patch\""), "{answer}");
    c.execute(
        "document.getElementById('result').textContent = '';",
        vec![],
    )
    .await?;
    c.execute(
        "document.querySelector(\"button[data-action='abort']\").focus();",
        vec![],
    )
    .await?;
    key(Key::Enter).await?;
    let focused = c
        .execute("return document.activeElement.id;", vec![])
        .await?;
    assert_eq!(focused, json!("confirm-ok"), "Confirm has the focus");
    key(Key::Escape).await?;
    let open = c
        .execute("return document.getElementById('confirm').open;", vec![])
        .await?;
    assert_eq!(open, json!(false), "Escape closes the dialog");
    // (The dialog was last closed with "ok", just above.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        text_of(c, "#result").await?,
        "",
        "a cancelled action sends nothing"
    );
    let role = c.find(Locator::Css("#result")).await?.attr("role").await?;
    assert_eq!(role.as_deref(), Some("alert"));
    // Nothing changed.
    let r = env.get("web").await;
    assert!(!r.status.unwrap_or_default().abort);

    // Without the page's token, no write is even tried.
    let res = reqwest::Client::new()
        .post(format!("{url}/api/rollouts/default/web/abort"))
        .send()
        .await?;
    assert_eq!(res.status(), reqwest::StatusCode::FORBIDDEN);
    // A page asked for under another host name (DNS rebinding) is not served.
    let res = reqwest::Client::new()
        .get(format!("{url}/"))
        .header("host", "attacker.example")
        .send()
        .await?;
    assert_eq!(res.status(), reqwest::StatusCode::MISDIRECTED_REQUEST);
    b.client.clone().close().await?;
    Ok(())
}
