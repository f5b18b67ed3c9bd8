//! Where a test runs: a cluster with Sluice's CRDs (and Istio's when asked).
//!
//! The cluster is the in-process test cluster, or a real one when `SLUICE_E2E_KUBECONFIG` names a
//! kubeconfig: then every test gets a fresh namespace (deleted at the end), the CRDs are applied
//! first, and a test that needs one of the test cluster's controls (fault injection, the write
//! log, ...) says so and returns early through [`skip_on_real_cluster`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use sluice::api::rollout::Rollout;
use sluice_e2e::TestCluster;

/// The real cluster to run against: the kubeconfig named by `SLUICE_E2E_KUBECONFIG`, if set.
pub fn real_kubeconfig() -> Option<PathBuf> {
    std::env::var_os("SLUICE_E2E_KUBECONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// True on a real cluster, after printing why the test does not run there; the test then returns.
/// `reason` names the test cluster control the test needs.
pub fn skip_on_real_cluster(reason: &str) -> bool {
    if real_kubeconfig().is_some() {
        eprintln!("skipped on a real cluster: {reason}");
        return true;
    }
    false
}

/// Timeouts for what real pods do (pull an image, start): longer on a real cluster.
pub fn patience(secs: u64) -> Duration {
    let factor = if real_kubeconfig().is_some() { 3 } else { 1 };
    Duration::from_secs(secs * factor)
}

/// How the test cluster is set up. A real cluster is used as it is; only the CRDs are applied.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// The simulated workload controllers, kubelet and garbage collector run.
    pub simulation: bool,
    /// How long a simulated pod takes to become ready (None: the test cluster's default).
    pub pod_ready_delay: Option<Duration>,
    /// Sluice's CRDs are installed.
    pub crds: bool,
    /// The Istio and Gateway API CRDs of `e2e/crds` are installed (on a real cluster: only when it
    /// lacks them).
    pub istio: bool,
}

impl Setup {
    /// What the controller tests use: simulation with fast pods, Istio CRDs.
    pub fn controller() -> Setup {
        Setup {
            simulation: true,
            pod_ready_delay: Some(Duration::from_millis(200)),
            crds: true,
            istio: true,
        }
    }
}

/// Where a test runs: the test cluster (in the `default` namespace, as it is the test's alone),
/// or a real cluster (in a fresh namespace, deleted when this is dropped).
pub struct Target {
    /// The test cluster, with its controls; None on a real cluster.
    pub cluster: Option<TestCluster>,
    pub client: Client,
    /// The namespace of the test's objects.
    pub ns: String,
    /// The real cluster's kubeconfig.
    real: Option<PathBuf>,
}

static NS_SEQ: AtomicU32 = AtomicU32::new(0);

/// Marks the namespaces the tests create, so that leftovers can be found and deleted.
pub const TEST_NAMESPACE_LABEL: &str = "e2e.sluice.dev/test";

async fn real_client(kubeconfig: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
        .expect("SLUICE_E2E_KUBECONFIG must be a readable kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("the kubeconfig must be usable");
    Client::try_from(config).expect("client from the kubeconfig")
}

fn crd_files(dir: &Path) -> Vec<CustomResourceDefinition> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("crd folder")
        .map(|e| e.expect("crd folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).expect("crd file");
            serde_yaml::Deserializer::from_str(&text)
                .map(|doc| {
                    CustomResourceDefinition::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                })
                .collect::<Vec<CustomResourceDefinition>>()
        })
        .collect()
}

/// Server-side applies `crds` (idempotent, so parallel tests may all do it) and waits until
/// each is established. With `only_missing`, CRDs the cluster already has are left alone (a
/// cluster with Istio keeps its own).
async fn apply_crds(client: &Client, crds: Vec<CustomResourceDefinition>, only_missing: bool) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.name_any();
        if only_missing && api.get_opt(&name).await.expect("read crd").is_some() {
            continue;
        }
        api.patch(
            &name,
            &PatchParams::apply("sluice-e2e-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply crd {name}: {e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let live = api.get(&name).await.expect("read crd");
            let established = live
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "crd {name} never established"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Target {
    pub async fn start(setup: Setup) -> Target {
        if let Ok(filter) = std::env::var("SLUICE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let root = crate::repo_root();
        if let Some(kubeconfig) = real_kubeconfig() {
            let client = real_client(&kubeconfig).await;
            if setup.crds {
                apply_crds(&client, crd_files(&root.join("crds")), false).await;
            }
            if setup.istio {
                apply_crds(&client, crd_files(&root.join("e2e/crds")), true).await;
            }
            let ns = format!(
                "sluice-e2e-{}-{}",
                std::process::id(),
                NS_SEQ.fetch_add(1, Ordering::SeqCst)
            );
            let namespace: Namespace = serde_json::from_value(serde_json::json!({
                "metadata": {"name": ns, "labels": {TEST_NAMESPACE_LABEL: "true"}}
            }))
            .unwrap();
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
            return Target {
                cluster: None,
                client,
                ns,
                real: Some(kubeconfig),
            };
        }
        let mut builder = TestCluster::builder();
        if !setup.simulation {
            builder = builder.without_simulation();
        }
        if let Some(delay) = setup.pod_ready_delay {
            builder = builder.pod_ready_delay(delay);
        }
        let cluster = builder.start().await.expect("test cluster");
        if setup.crds {
            cluster
                .load_crds_from_dir(&root.join("crds"))
                .expect("crds");
        }
        if setup.istio {
            cluster.install_istio_crds().expect("istio crds");
        }
        Target {
            client: cluster.client(),
            cluster: Some(cluster),
            ns: "default".into(),
            real: None,
        }
    }

    pub fn is_real(&self) -> bool {
        self.real.is_some()
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client built as the controller binary builds its own (with its User-Agent).
    pub async fn controller_client(&self) -> Client {
        let config = match (&self.real, &self.cluster) {
            (Some(path), _) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .expect("SLUICE_E2E_KUBECONFIG must be a readable kubeconfig");
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .expect("the kubeconfig must be usable")
            }
            (None, Some(cluster)) => cluster.config(),
            (None, None) => unreachable!("a target is a test cluster or a real one"),
        };
        sluice::kube_client::client(config, &sluice::kube_client::controller_user_agent(), None)
            .expect("controller client")
    }

    /// The test cluster's controls. Only for tests that returned early through
    /// [`skip_on_real_cluster`] on a real cluster.
    pub fn controls(&self) -> &TestCluster {
        self.cluster
            .as_ref()
            .expect("a test using the test cluster's controls must skip on a real cluster")
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.url().to_string(),
            None => self.client_url(),
        }
    }

    fn client_url(&self) -> String {
        let path = self.real.as_ref().expect("real cluster");
        let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
        let context = kubeconfig
            .current_context
            .as_deref()
            .and_then(|c| kubeconfig.contexts.iter().find(|n| n.name == c))
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .unwrap_or_default();
        kubeconfig
            .clusters
            .iter()
            .find(|c| c.name == context)
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .unwrap_or_default()
    }

    /// Writes a kubeconfig for the CLI whose current context points at this target's namespace
    /// (on a real cluster: a copy of `SLUICE_E2E_KUBECONFIG` with the namespace set).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let Some(real) = &self.real else {
            return self
                .controls()
                .write_kubeconfig(path)
                .map_err(std::io::Error::other);
        };
        let mut kubeconfig =
            kube::config::Kubeconfig::read_from(real).map_err(std::io::Error::other)?;
        let current = kubeconfig.current_context.clone().unwrap_or_default();
        for named in &mut kubeconfig.contexts {
            if named.name == current
                && let Some(context) = named.context.as_mut()
            {
                context.namespace = Some(self.ns.clone());
            }
        }
        let yaml = serde_yaml::to_string(&kubeconfig).map_err(std::io::Error::other)?;
        std::fs::write(path, yaml)
    }
}

impl Drop for Target {
    /// Deletes a real cluster's test namespace. The test's runtime may be gone or blocked here,
    /// so this uses a runtime and client of its own. Finalizers of Rollouts are removed first:
    /// the controller that would remove them is stopped by now.
    fn drop(&mut self) {
        let Some(kubeconfig) = self.real.clone() else {
            return;
        };
        let ns = self.ns.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                let client = real_client(&kubeconfig).await;
                let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
                if let Ok(list) = rollouts.list(&ListParams::default()).await {
                    for ro in list.items.iter().filter(|r| !r.finalizers().is_empty()) {
                        let patch = serde_json::json!({"metadata": {"finalizers": null}});
                        let _ = rollouts
                            .patch(
                                &ro.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(&patch),
                            )
                            .await;
                    }
                }
                if let Err(e) = Api::<Namespace>::all(client)
                    .delete(&ns, &DeleteParams::background())
                    .await
                {
                    eprintln!("namespace {ns} not deleted: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}
