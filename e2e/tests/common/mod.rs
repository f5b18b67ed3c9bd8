//! Shared helpers of the black-box tests: the target API server (the test cluster by default, a
//! real cluster when `SLUICE_E2E_KUBECONFIG` names a kubeconfig), fresh namespaces, a test CRD,
//! and polling with generous timeouts (never asserting how long anything took).
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use sluice_e2e::TestCluster;

/// Where the conformance suite runs.
pub struct Target {
    pub client: kube::Client,
    /// `None` when running against a real cluster.
    pub cluster: Option<TestCluster>,
}

impl Target {
    pub fn is_real(&self) -> bool {
        self.cluster.is_none()
    }
}

/// The test cluster (with a small watch history, so that old versions expire as on a real
/// cluster), or the real cluster named by `SLUICE_E2E_KUBECONFIG`.
pub async fn target() -> Target {
    if let Ok(path) = std::env::var("SLUICE_E2E_KUBECONFIG")
        && !path.is_empty()
    {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path)
            .expect("SLUICE_E2E_KUBECONFIG must be a readable kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig must be usable");
        let client = kube::Client::try_from(config).expect("client from kubeconfig");
        return Target {
            client,
            cluster: None,
        };
    }
    let cluster = TestCluster::builder()
        .watch_history(200)
        .start()
        .await
        .expect("test cluster starts");
    Target {
        client: cluster.client(),
        cluster: Some(cluster),
    }
}

static NS_SEQ: AtomicU32 = AtomicU32::new(0);

/// A new namespace with a unique name (deleted by the caller if it wants to).
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    let n = NS_SEQ.fetch_add(1, Ordering::SeqCst);
    let name = format!("{prefix}-{}-{n}", std::process::id());
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("e2e.sluice.dev", "v1", "Widget"),
        "widgets",
    )
}

pub fn widgets(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &widget_resource())
}

/// Installs the `Widget` test CRD through the API and waits until it is served.
pub async fn install_widget_crd(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(sluice_e2e::example_crd()).unwrap();
    api.patch(
        "widgets.e2e.sluice.dev",
        &PatchParams::apply("e2e-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply widget crd");
    let probe = widgets(client, "default");
    eventually("widget crd served", || async {
        probe.list(&Default::default()).await.is_ok()
    })
    .await;
}

pub fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "e2e.sluice.dev/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

/// Polls `check` until it is true; panics with `what` after a generous timeout.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn delete_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// The HTTP status code of a kube API error (panics on success or on a non-API error).
pub fn code<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
