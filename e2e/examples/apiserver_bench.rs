//! Benchmark of the test cluster's API server: writes per second, LIST latency, watch fan-out
//! latency and memory, with the real kube client over loopback HTTP.
//!
//! `cargo run --release -p sluice-e2e --example apiserver_bench -- --objects 10000 --watchers 100`
//!
//! Clients and server share this process (and its cores), so every figure includes the client's
//! own cost; RSS is the whole process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use sluice_e2e::TestCluster;

#[derive(Parser, Debug)]
struct Args {
    /// Objects to create (ConfigMaps in one namespace).
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Concurrent watchers on the same resource.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Updates made while the watchers listen (each fans out to every watcher).
    #[arg(long, default_value_t = 200)]
    updates: usize,
    /// Concurrent writers while creating objects.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Full LIST calls to time.
    #[arg(long, default_value_t = 20)]
    lists: usize,
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:.2?}  p95 {:.2?}  p99 {:.2?}  max {:.2?}  (n={})",
        at(0.5),
        at(0.95),
        at(0.99),
        samples[samples.len() - 1],
        samples.len()
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (rss0, _) = rss_kib();
    let cluster = TestCluster::builder()
        .without_simulation()
        .watch_history(args.objects + args.updates + 1000)
        .start()
        .await?;
    let client = cluster.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    println!(
        "test cluster api server benchmark: {} objects, {} watchers, {} updates",
        args.objects, args.watchers, args.updates
    );
    println!("process RSS at start: {:.1} MiB", mib(rss0));

    // Writes: create every object with `concurrency` writers.
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..args.concurrency {
        let api = api.clone();
        let next = next.clone();
        let total = args.objects;
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("cm-{i:06}"), "labels": {"bench": "yes", "shard": (i % 10).to_string()}},
                    "data": {"payload": "x".repeat(200), "index": i.to_string()}
                }))
                .expect("static configmap");
                api.create(&PostParams::default(), &cm).await.expect("create");
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let create_time = started.elapsed();
    println!(
        "creates: {} in {:.2?} = {:.0} writes/s ({} concurrent writers)",
        args.objects,
        create_time,
        args.objects as f64 / create_time.as_secs_f64(),
        args.concurrency
    );
    let (rss1, _) = rss_kib();
    println!(
        "process RSS with {} objects: {:.1} MiB",
        args.objects,
        mib(rss1)
    );

    // LIST latency: whole list, a paged walk (limit=500 as kube's watcher does), a selector list.
    let mut full = Vec::new();
    for _ in 0..args.lists {
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        full.push(t.elapsed());
        assert_eq!(list.items.len(), args.objects);
    }
    println!("LIST all {} objects: {}", args.objects, percentiles(full));
    let mut paged = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut params = ListParams::default().limit(500);
        let mut count = 0;
        loop {
            let page = api.list(&params).await?;
            count += page.items.len();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => params = params.continue_token(&c),
                None => break,
            }
        }
        assert_eq!(count, args.objects);
        paged.push(t.elapsed());
    }
    println!("LIST all in pages of 500: {}", percentiles(paged));
    let mut selected = Vec::new();
    for _ in 0..args.lists {
        let t = Instant::now();
        let list = api.list(&ListParams::default().labels("shard=3")).await?;
        selected.push(t.elapsed());
        assert_eq!(list.items.len(), args.objects / 10);
    }
    println!(
        "LIST with labelSelector (1/10 match): {}",
        percentiles(selected)
    );
    let (rss_lists, _) = rss_kib();
    println!(
        "process RSS after the LIST phase: {:.1} MiB",
        mib(rss_lists)
    );

    // Watch fan-out: every watcher sees every update; latency from the write's send to receipt.
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let sent: Arc<std::sync::Mutex<BTreeMap<String, Instant>>> = Default::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let api = api.clone();
        let tx = tx.clone();
        let rv = rv.clone();
        let updates = args.updates;
        watchers.push(tokio::spawn(async move {
            let stream = api
                .watch(
                    &WatchParams::default()
                        .fields("metadata.name=cm-000000")
                        .timeout(290),
                    &rv,
                )
                .await
                .expect("watch");
            let mut stream = std::pin::pin!(stream);
            let mut seen = 0;
            while let Some(event) = stream.try_next().await.expect("watch event") {
                if let WatchEvent::Modified(cm) = event {
                    let marker = cm
                        .data
                        .and_then(|d| d.get("marker").cloned())
                        .unwrap_or_default();
                    let _ = tx.send((marker, Instant::now()));
                    seen += 1;
                    if seen == updates {
                        break;
                    }
                }
            }
        }));
    }
    drop(tx);
    // Give every watcher time to connect before the first update.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss2, _) = rss_kib();
    let started = Instant::now();
    for i in 0..args.updates {
        let marker = format!("m{i}");
        sent.lock()
            .expect("lock")
            .insert(marker.clone(), Instant::now());
        api.patch(
            "cm-000000",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"marker": marker}})),
        )
        .await?;
    }
    let update_time = started.elapsed();
    let mut latencies = Vec::new();
    while let Some((marker, at)) = rx.recv().await {
        if let Some(sent_at) = sent.lock().expect("lock").get(&marker) {
            latencies.push(at.duration_since(*sent_at));
        }
    }
    let all_done = started.elapsed();
    for w in watchers {
        w.await?;
    }
    println!(
        "updates while {} watchers listen: {} in {:.2?} = {:.0} writes/s",
        args.watchers,
        args.updates,
        update_time,
        args.updates as f64 / update_time.as_secs_f64()
    );
    println!(
        "watch fan-out latency (write sent -> event received, {} deliveries): {}",
        latencies.len(),
        percentiles(latencies)
    );
    println!(
        "all deliveries done {:.2?} after the first update",
        all_done
    );
    let (rss3, hwm) = rss_kib();
    println!(
        "process RSS: {:.1} MiB with {} watchers connected, {:.1} MiB at the end, peak {:.1} MiB",
        mib(rss2),
        args.watchers,
        mib(rss3),
        mib(hwm)
    );
    Ok(())
}
