//! The controller: Rollouts and AnalysisRuns reconciled against a cluster with kube-rs.
//!
//! Every replica watches and keeps warm caches; only the holder of the leader Lease writes.
//! A Rollout reconcile is observe (caches) → plan (pure, [`crate::plan`]) → apply → status.
//!
//! - [`rollout`]: the Rollout reconcile, one file per step; [`analysis_run`]: AnalysisRuns,
//!   measured through the [`measurement_pool`].
//! - [`writer`]: every write, refused while this replica is not the [`leader`]; [`events`]:
//!   the Events, one per distinct fact.
//! - `watches`: the watches that fill the caches ([`context::Stores`]) and trigger reconciles.
//! - [`config`] and [`args`]: how a controller is started; [`clock`]: the one clock it reads;
//!   [`metrics`] and [`admin`]: what it exports.

pub mod admin;
pub mod analysis_run;
pub mod args;
pub mod clock;
pub mod compact;
pub mod config;
pub mod context;
pub mod events;
pub mod leader;
pub mod measurement_pool;
pub mod metrics;
pub mod owner_index;
pub mod reference_index;
pub mod rollout;
mod watches;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Resource;
use kube::runtime::controller::{Action, Config as ControllerRuntimeConfig, Controller};
use kube::runtime::watcher;

pub use args::ControllerArgs;
pub use config::{ControllerConfig, Settings};
use context::{CachedRollout, Context, Stores};
use leader::LeaderGate;
use metrics::{ControllerLabels, ErrorLabels, Metrics};
use reference_index::ReferenceIndex;
use watches::{
    CappedBackoff, api, cached, label_selector, referencing, using_templates, wait_ready,
    watch_untyped,
};

use crate::api::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::api::constants;
use crate::api::rollout::Rollout;
use crate::metrics::prometheus::PrometheusProvider;

/// A running controller.
pub struct Running {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// True once every cache has synced.
    pub ready: Arc<AtomicBool>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether this replica writes.
    pub leader: LeaderGate,
    /// The admin server's bound address.
    pub admin_addr: Option<SocketAddr>,
}

impl Running {
    /// Stops every task at once, wherever it is (as a killed process would).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Waits until every task ends.
    pub async fn join(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Starts the controllers; returns once every cache has synced.
pub async fn start(client: kube::Client, config: ControllerConfig) -> anyhow::Result<Running> {
    let settings = config.settings.clone();
    let mut tasks = Vec::new();
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));

    let leader = match config.lease.clone() {
        Some(lease) => {
            let (gate, task) = leader::start(client.clone(), lease, config.clock.clone());
            tasks.push(task);
            gate
        }
        None => LeaderGate::always(),
    };

    let admin_addr = match config.admin_addr {
        Some(addr) => {
            let (bound, task) =
                admin::serve(addr, metrics.clone(), ready.clone(), leader.clone()).await?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };

    let ns = settings.namespace.clone();
    let all = watcher::Config::default;
    let rollout_cfg = all().labels(&label_selector(&settings.instance_id));
    let owned_rs_cfg = all().labels(constants::POD_TEMPLATE_HASH_LABEL);
    let (rs_store, rs_owners, rs_stream) = watches::cached_compact_by_owner(
        api::<ReplicaSet>(&client, &ns),
        owned_rs_cfg,
        watches::trim_replica_set,
    );
    let legacy_rs_cfg = all().labels(&format!(
        "{},!{}",
        constants::LEGACY_POD_TEMPLATE_HASH_LABEL,
        constants::POD_TEMPLATE_HASH_LABEL
    ));
    let (legacy_rs_store, legacy_rs_owners, legacy_rs_stream) = watches::cached_compact_by_owner(
        api::<ReplicaSet>(&client, &ns),
        legacy_rs_cfg,
        watches::trim_replica_set,
    );
    let (svc_store, svc_stream) = cached(api::<Service>(&client, &ns), all());
    // A Rollout's runs carry its rollout-type label; no other AnalysisRun is read.
    let (ar_store, ar_owners, ar_stream) = watches::cached_by_owner(
        api::<AnalysisRun>(&client, &ns),
        all().labels(constants::ROLLOUT_TYPE_LABEL),
        |_| (),
    );
    let (dep_store, dep_stream) = cached(api::<Deployment>(&client, &ns), all());
    // The routers read their objects from this cache, filled by the watches of their kinds
    // (no read per reconcile); it keeps only the objects some Rollout references.
    let routing_cache = Arc::new(crate::traffic::cache::ObjectCache::new());
    let ingress_stream =
        watches::watch_routing(api::<Ingress>(&client, &ns), (), routing_cache.clone());
    // Templates are read live when a Rollout is reconciled; their watches only trigger that, so
    // that creating or fixing a template resumes the Rollouts it held back.
    let (template_resource, template_stream) =
        watch_untyped::<AnalysisTemplate>(&client, ns.as_deref(), &routing_cache);
    let (cluster_template_resource, cluster_template_stream) =
        watch_untyped::<ClusterAnalysisTemplate>(&client, None, &routing_cache);
    // Which Rollouts reference each Service, Deployment and routing object: maps those objects'
    // events to Rollouts, and scopes the routers' cache.
    let references = ReferenceIndex::new(settings.routing.clone());
    let (rollout_store, rollout_stream) = watches::main_watch(
        api::<Rollout>(&client, &ns),
        rollout_cfg,
        references.clone(),
    );
    let rollout_ctrl = Controller::for_stream(rollout_stream, rollout_store)
        .trigger_backoff(CappedBackoff::default());
    let stores = Stores {
        rollouts: rollout_ctrl.store(),
        replica_sets: rs_store,
        legacy_replica_sets: legacy_rs_store,
        services: svc_store,
        analysis_runs: ar_store,
        deployments: dep_store,
        routing: routing_cache.clone(),
        replica_set_owners: rs_owners,
        legacy_replica_set_owners: legacy_rs_owners,
        analysis_run_owners: ar_owners,
    };
    routing_cache.scope(watches::routing_scope(references.clone()));
    // Never plan from a partial picture (a missing ReplicaSet would be created again, a missing
    // AnalysisRun started again): reconciles wait until every cache has synced.
    {
        let stores = stores.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let synced = wait_ready(&stores.rollouts).await
                && wait_ready(&stores.replica_sets).await
                && wait_ready(&stores.legacy_replica_sets).await
                && wait_ready(&stores.services).await
                && wait_ready(&stores.analysis_runs).await
                && wait_ready(&stores.deployments).await;
            tracing::debug!(synced, "caches synced");
            ready.store(synced, Ordering::SeqCst);
        }));
    }

    let prometheus = PrometheusProvider::new(config.prometheus.clone())?;
    let web = crate::metrics::web::WebProvider::new(config.prometheus.allowlist.clone())?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        stores.clone(),
        metrics.clone(),
        leader.clone(),
        config.clock.clone(),
        prometheus,
        web,
        &config.identity,
        ready.clone(),
    ));

    if let Some(n) = config.notifications.clone() {
        let notifier = Arc::new(crate::notifications::Notifier::new(
            n,
            client.clone(),
            ctx.writer.clone(),
            leader.clone(),
            metrics.clone(),
            &stores,
            &config.identity,
        )?);
        ctx.recorder.notify_with(notifier.clone());
        tasks.push(tokio::spawn(notifier.run()));
    }

    // Reconcile everything when this replica becomes the leader.
    let mut changes = leader.changes();
    let became_leader = async_stream_from_watch(&mut changes, metrics.clone());

    let routing = settings.routing.clone();
    let mut rollout_ctrl = rollout_ctrl
        .owns_stream(rs_stream)
        .owns_stream(legacy_rs_stream)
        .owns_stream(ar_stream)
        .watches_stream(svc_stream, referencing(references.clone(), "Service"))
        .watches_stream(dep_stream, referencing(references.clone(), "Deployment"))
        .watches_stream(ingress_stream, referencing(references.clone(), "Ingress"))
        .watches_stream_with(
            template_stream,
            using_templates(references.clone(), false),
            template_resource,
        )
        .watches_stream_with(
            cluster_template_stream,
            using_templates(references.clone(), true),
            cluster_template_resource,
        );
    for (kind, resource, stream) in watches::istio(&client, &ns, &routing, &routing_cache).await {
        let mapper = referencing(references.clone(), kind);
        rollout_ctrl = rollout_ctrl.watches_stream_with(stream, mapper, resource);
    }
    for (kind, resource, stream) in watches::gateway_api(&client, &ns, &routing_cache).await {
        let mapper = referencing(references.clone(), kind);
        rollout_ctrl = rollout_ctrl.watches_stream_with(stream, mapper, resource);
    }
    if let Some((resource, stream)) = watches::reference_grants(&client, &ns).await {
        let mapper = watches::granted_to(references.clone());
        rollout_ctrl = rollout_ctrl.watches_stream_with(stream, mapper, resource);
    }
    let rollout_ctrl = rollout_ctrl
        .reconcile_all_on(became_leader)
        .with_config(ControllerRuntimeConfig::default().concurrency(settings.rollout_workers));
    let rctx = ctx.clone();
    tasks.push(tokio::spawn(async move {
        rollout_ctrl
            .run(reconcile_rollout, rollout_error_policy, rctx)
            .for_each(|r| {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "rollout controller");
                }
                std::future::ready(())
            })
            .await;
        tracing::warn!("rollout controller stopped");
    }));

    // Runs created for a sharded Rollout carry its instance id: each shard measures its own.
    let run_ctrl = Controller::new(
        api::<AnalysisRun>(&client, &ns),
        watcher::Config::default().labels(&label_selector(&settings.instance_id)),
    )
    // A job metric's Job finishing resumes its run at once.
    .owns(
        api::<k8s_openapi::api::batch::v1::Job>(&client, &ns),
        watcher::Config::default().labels(crate::metrics::job::RUN_UID_LABEL),
    )
    // A Rollout that moves on (a run no longer current) may put its finished runs over the
    // history limits: one of them is reconciled to prune the others.
    .watches(
        api::<Rollout>(&client, &ns),
        all().labels(&label_selector(&settings.instance_id)),
        analysis_run::newest_finished_run(
            stores.analysis_runs.clone(),
            stores.analysis_run_owners.clone(),
        ),
    )
    .with_config(ControllerRuntimeConfig::default().concurrency(32));
    let actx = ctx.clone();
    tasks.push(tokio::spawn(async move {
        run_ctrl
            .run(reconcile_run, run_error_policy, actx)
            .for_each(|_| std::future::ready(()))
            .await;
    }));

    Ok(Running {
        tasks,
        ready,
        metrics,
        leader,
        admin_addr,
    })
}

fn async_stream_from_watch(
    changes: &mut tokio::sync::watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let rx = changes.clone();
    futures::stream::unfold(rx, move |mut rx| {
        let metrics = metrics.clone();
        async move {
            loop {
                if rx.changed().await.is_err() {
                    // Leadership never changes (election disabled): stay pending forever.
                    futures::future::pending::<()>().await;
                }
                let leading = *rx.borrow();
                metrics.leader.set(i64::from(leading));
                if leading {
                    return Some(((), rx));
                }
            }
        }
    })
}

fn key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default()
    )
}

async fn reconcile_rollout(
    cached: Arc<CachedRollout>,
    ctx: Arc<Context>,
) -> Result<Action, rollout::Error> {
    let labels = ControllerLabels {
        controller: "rollout".into(),
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    ctx.metrics.in_flight.inc();
    let started = Instant::now();
    let (result, busy) = metrics::Busy::new(async {
        match cached.expand() {
            Ok(ro) => rollout::reconcile(Arc::new(ro), ctx.clone()).await,
            Err(e) => Err(rollout::Error::Cache(e)),
        }
    })
    .await;
    ctx.metrics.in_flight.dec();
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconcile_busy
        .get_or_create(&labels)
        .observe(busy.as_secs_f64());
    if result.is_ok() {
        ctx.reset_backoff(&key(cached.as_ref()));
    }
    result
}

fn rollout_error_policy(ro: Arc<CachedRollout>, err: &rollout::Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "rollout".into(),
            category: err.category().into(),
        })
        .inc();
    let wait = ctx.backoff(&key(ro.as_ref()));
    if err.category() == "conflict" {
        // A write raced another writer or our own cache: routine, retried shortly.
        tracing::debug!(rollout = %key(ro.as_ref()), error = %err, retry_in = ?wait, "reconcile conflict");
    } else {
        tracing::warn!(rollout = %key(ro.as_ref()), error = %err, category = err.category(), retry_in = ?wait, "reconcile failed");
    }
    Action::requeue(wait)
}

async fn reconcile_run(
    run: Arc<AnalysisRun>,
    ctx: Arc<Context>,
) -> Result<Action, analysis_run::Error> {
    let labels = ControllerLabels {
        controller: "analysisrun".into(),
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let started = Instant::now();
    let (result, busy) =
        metrics::Busy::new(analysis_run::reconcile(run.clone(), ctx.clone())).await;
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconcile_busy
        .get_or_create(&labels)
        .observe(busy.as_secs_f64());
    if result.is_ok() {
        ctx.reset_backoff(&format!("run:{}", key(run.as_ref())));
    }
    result
}

fn run_error_policy(run: Arc<AnalysisRun>, err: &analysis_run::Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "analysisrun".into(),
            category: err.category().into(),
        })
        .inc();
    let wait = ctx.backoff(&format!("run:{}", key(run.as_ref())));
    tracing::warn!(analysisrun = %key(run.as_ref()), error = %err, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Runs the controller process until interrupted (the `sluice controller` command).
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    args::init_logging(&args);
    let client = args.client().await?;
    let config = args.to_config()?;
    let running = start(client, config).await?;
    tracing::info!(admin = ?running.admin_addr, "sluice controller started");
    // Kubernetes stops pods with SIGTERM; Ctrl-C for local runs.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.abort();
    // Give in-flight writes no chance to land after the signal.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
