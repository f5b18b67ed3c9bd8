//! `sluice dashboard`: a local web server showing every Rollout and letting its user promote,
//! abort, retry, pause, resume, restart or undo one with a click.
//!
//! How it is built, and why:
//! - It talks to the API server with the user's own kubeconfig, so their RBAC applies to every
//!   read and write; it holds no rights of its own. It binds to loopback unless told otherwise
//!   (a non-loopback `--address` prints a warning), answers only requests addressed to the host
//!   it listens on (no DNS rebinding), and every mutating request must carry a token made at
//!   start and given only to the pages it serves (no cross-site request can promote or abort:
//!   another site can neither read the token nor send the header without a CORS preflight, which
//!   is never granted).
//! - One watch per kind for the whole server ([`cache`]), fanned out to every open page over
//!   server-sent events: when a watch reports a change, each open page's live part is rendered
//!   again on the server and pushed whole; the browser swaps it in. No page polls, none reloads.
//! - HTML is rendered on the server with maud, whose templates escape every interpolated value:
//!   names, images and messages come from the cluster and may be hostile. Charts are SVG drawn
//!   on the server ([`chart`]). The page's content security policy allows no inline script and
//!   nothing from another origin.
//! - The JavaScript is one small hand-written file (`app.js`: an `EventSource`, `fetch` for the
//!   actions, a confirmation dialog and a pause countdown) and one stylesheet, compiled into the
//!   binary with `include_str!`: `cargo build` alone makes a working dashboard, there is no
//!   JavaScript build step or committed build output, and the page loads nothing from the
//!   internet, so it works offline.
//! - The actions run [`crate::cli::actions::execute`], the code behind `sluice promote` and the
//!   others, so the dashboard and the CLI send the same patches; the explanation is
//!   [`crate::cli::explain::explain`], the sentences of `sluice explain`.

pub mod cache;
pub mod chart;
pub mod pages;
pub mod router;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use futures::Stream;
use jiff::Timestamp;
use maud::Markup;
use tokio::task::JoinHandle;

use crate::cli::KubeArgs;
use crate::cli::actions::{Action, execute};
use crate::cli::info::view;
use crate::cli::kube::{CliError, Target, connect};
use cache::Cache;
use pages::Filter;

/// Options of `dashboard`.
#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 3100)]
    pub port: u16,
    /// Address to listen on. Anything but loopback exposes the dashboard (and the user's
    /// rights) to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Every namespace (instead of `-n` or the context's namespace).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The header a mutating request carries the token in.
pub const TOKEN_HEADER: &str = "x-sluice-token";

const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct App {
    cache: Cache,
    client: kube::Client,
    server: String,
    /// The namespace watched; `None` for all.
    namespace: Option<String>,
    token: String,
    /// Host header values this server answers to.
    hosts: Vec<String>,
}

/// A running dashboard; stops when dropped.
pub struct Dashboard {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The token mutating requests carry.
    pub token: String,
    task: JoinHandle<()>,
}

impl Dashboard {
    /// `http://ADDR:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Runs until the server fails.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?;
        Ok(())
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A random token (32 bytes, hex) from the process's crypto provider.
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no secure random numbers for the dashboard's token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts the dashboard on `addr` for the cluster of `target`: the namespace of `target`, or
/// every namespace with `all_namespaces`.
pub async fn serve(
    target: Target,
    all_namespaces: bool,
    addr: SocketAddr,
) -> anyhow::Result<Dashboard> {
    let namespace = (!all_namespaces).then(|| target.namespace.clone());
    let cache = Cache::start(&target.client, namespace.as_deref());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    let token = new_token()?;
    let port = addr.port();
    let mut hosts = vec![addr.to_string(), format!("localhost:{port}")];
    if !addr.ip().is_loopback() {
        // Reached from elsewhere by a name this process cannot know: the token still guards
        // every write.
        hosts.clear();
    }
    cache.ready(Duration::from_secs(10)).await;
    let app = Arc::new(App {
        cache,
        client: target.client.clone(),
        server: target.server.clone(),
        namespace,
        token: token.clone(),
        hosts,
    });
    let router = Router::new()
        .route("/", get(overview_page))
        .route("/rollouts/{ns}/{name}", get(rollout_page))
        .route("/live", get(overview_live))
        .route("/live/rollouts/{ns}/{name}", get(rollout_live))
        .route("/api/rollouts/{ns}/{name}/{action}", post(run_action))
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    APP_JS,
                )
            }),
        )
        .route(
            "/static/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    STYLE_CSS,
                )
            }),
        )
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "dashboard server stopped");
        }
    });
    Ok(Dashboard { addr, token, task })
}

/// Refuses requests for another host (DNS rebinding) and sets the security headers.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if !app.hosts.is_empty() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !app.hosts.iter().any(|h| h == host) {
            return (StatusCode::MISDIRECTED_REQUEST, "unknown host").into_response();
        }
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// What a live stream renders.
#[derive(Clone)]
enum Live {
    Overview(Filter),
    Rollout(String, String),
}

async fn render(app: &App, live: &Live) -> Markup {
    match live {
        Live::Overview(filter) => pages::overview(&app.cache, filter),
        Live::Rollout(ns, name) => match app.cache.snapshot(ns, name) {
            Some(snapshot) => {
                let v = view(&snapshot);
                let router = router::objects(&app.client, &snapshot.rollout).await;
                pages::rollout(&app.cache, &v, &snapshot.pods, router)
            }
            None => pages::missing(&app.cache, ns, name),
        },
    }
}

fn query(filter: &Filter) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("ns", &filter.ns)
        .append_pair("q", &filter.q)
        .finish()
}

fn path_part(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A digest of a rendered live part: the page names the one it was served with, so that its
/// stream does not push the same thing again at once.
fn digest(html: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    html.hash(&mut h);
    h.finish()
}

/// `?v=`: the digest of what the page already shows.
#[derive(Debug, Default, serde::Deserialize)]
struct Shown {
    #[serde(default)]
    v: Option<u64>,
}

async fn overview_page(State(app): State<Arc<App>>, Query(filter): Query<Filter>) -> Markup {
    let form = pages::filter_form(&app.cache, &filter, app.namespace.as_deref());
    let live = render(&app, &Live::Overview(filter.clone())).await;
    let live_url = format!("/live?{}&v={}", query(&filter), digest(&live.0));
    pages::page("Rollouts", &app.token, &live_url, Some(form), live)
}

async fn rollout_page(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
) -> Markup {
    let live = render(&app, &Live::Rollout(ns.clone(), name.clone())).await;
    let live_url = format!(
        "/live/rollouts/{}/{}?v={}",
        path_part(&ns),
        path_part(&name),
        digest(&live.0)
    );
    let actions = pages::actions(&ns, &name);
    pages::page(&name, &app.token, &live_url, Some(actions), live)
}

/// The live part, again after every change the watches report (changes within 200 ms are
/// rendered once), only when it differs from what the page has: `shown` is the digest of what
/// the page was served with (so a page is not pushed what it already shows, and a reconnect
/// starts over from there).
fn stream(
    app: Arc<App>,
    live: Live,
    shown: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let rx = app.cache.subscribe();
    futures::stream::unfold(
        (app, live, rx, shown, true),
        |(app, live, mut rx, last, mut first)| async move {
            loop {
                if !first {
                    rx.changed().await.ok()?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    rx.borrow_and_update();
                }
                first = false;
                let html = render(&app, &live).await.into_string();
                let now = digest(&html);
                if Some(now) != last {
                    let event = Event::default().event("render").data(&html);
                    return Some((Ok(event), (app, live, rx, Some(now), false)));
                }
            }
        },
    )
}

async fn overview_live(
    State(app): State<Arc<App>>,
    Query(filter): Query<Filter>,
    Query(shown): Query<Shown>,
) -> impl IntoResponse {
    Sse::new(stream(app, Live::Overview(filter), shown.v)).keep_alive(KeepAlive::default())
}

async fn rollout_live(
    State(app): State<Arc<App>>,
    Path((ns, name)): Path<(String, String)>,
    Query(shown): Query<Shown>,
) -> impl IntoResponse {
    Sse::new(stream(app, Live::Rollout(ns, name), shown.v)).keep_alive(KeepAlive::default())
}

/// The answer to an action: whether it was done, and the CLI's line or the API server's error.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ActionAnswer {
    /// The patch was accepted.
    pub ok: bool,
    /// What was done, or why not.
    pub message: String,
}

fn answer(code: StatusCode, ok: bool, message: String) -> (StatusCode, Json<ActionAnswer>) {
    (code, Json(ActionAnswer { ok, message }))
}

/// The action named in a URL (`promote-full` is `promote --full`).
pub fn parse_action(name: &str, now: Timestamp) -> Option<Action> {
    Some(match name {
        "promote" => Action::Promote { full: false },
        "promote-full" => Action::Promote { full: true },
        "abort" => Action::Abort,
        "retry" => Action::Retry,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        // As `sluice restart`: restartAt is compared with pod start times (seconds).
        "restart" => Action::Restart {
            at: now.round(jiff::Unit::Second).ok()?,
        },
        "undo" => Action::Undo { to_revision: None },
        _ => return None,
    })
}

async fn run_action(
    State(app): State<Arc<App>>,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<ActionAnswer>) {
    let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if token != Some(app.token.as_str()) {
        return answer(
            StatusCode::FORBIDDEN,
            false,
            "missing or wrong dashboard token: reload the page".into(),
        );
    }
    let Some(action) = parse_action(&action, Timestamp::now()) else {
        return answer(
            StatusCode::NOT_FOUND,
            false,
            format!("unknown action \"{action}\""),
        );
    };
    let target = Target {
        client: app.client.clone(),
        namespace: ns,
        server: app.server.clone(),
    };
    match execute(&target, &name, &action).await {
        Ok(summary) => answer(StatusCode::OK, true, summary),
        Err(e) => {
            let code = match &e {
                CliError::Forbidden { .. } => StatusCode::FORBIDDEN,
                CliError::NotFound { .. } => StatusCode::NOT_FOUND,
                CliError::Refused(_) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_GATEWAY,
            };
            answer(code, false, e.to_string())
        }
    }
}

/// Runs `sluice dashboard` until interrupted.
pub async fn run(args: DashboardArgs) -> anyhow::Result<i32> {
    let target = connect(&args.kube).await?;
    let addr = SocketAddr::new(args.address, args.port);
    if !args.address.is_loopback() {
        eprintln!(
            "warning: the dashboard listens on {} and is reachable from the network; anyone who \
             reaches it sees what your kubeconfig may read",
            args.address
        );
    }
    let scope = if args.all_namespaces {
        "all namespaces".to_string()
    } else {
        format!("namespace {}", target.namespace)
    };
    let mut dashboard = serve(target, args.all_namespaces, addr).await?;
    println!("Sluice dashboard for {scope}: {}", dashboard.url());
    tokio::select! {
        r = dashboard.wait() => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_in_urls_are_the_cli_actions() {
        let now: Timestamp = "2026-01-01T00:00:00.6Z".parse().unwrap();
        assert_eq!(
            parse_action("promote", now),
            Some(Action::Promote { full: false })
        );
        assert_eq!(
            parse_action("promote-full", now),
            Some(Action::Promote { full: true })
        );
        assert_eq!(parse_action("abort", now), Some(Action::Abort));
        assert_eq!(
            parse_action("undo", now),
            Some(Action::Undo { to_revision: None })
        );
        // restartAt has second precision, as `sluice restart` writes it.
        assert_eq!(
            parse_action("restart", now),
            Some(Action::Restart {
                at: "2026-01-01T00:00:01Z".parse().unwrap()
            })
        );
        assert_eq!(parse_action("delete", now), None);
    }

    #[test]
    fn the_token_is_random_hex() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
