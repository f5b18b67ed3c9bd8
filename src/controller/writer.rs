//! The one way the controller writes to the cluster, open only while this replica leads.
//!
//! Every replica reads (watch caches, live reads); only the holder of the leader Lease writes.
//! Rather than checking leadership before each write (and forgetting one), every write of the
//! reconcilers, of the traffic routers they drive and of the Event recorder goes through one
//! client that refuses mutating requests while this replica is not the leader. The check happens
//! as each request leaves, so losing the Lease in the middle of a reconcile stops its writes at
//! once, including writes a router makes in a loop. The leader election itself writes its Lease
//! with the plain client.

use kube::Resource;
use kube::api::Api;
use kube::client::Body;

use super::leader::LeaderGate;

/// A write refused because this replica does not hold the leader Lease.
#[derive(Debug, thiserror::Error)]
#[error("not the leader: writes are disabled")]
pub struct NotLeader;

/// True when `e` is a write the [`Writer`] refused (a routine retry, not a failure).
pub fn is_not_leader(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(inner) if inner.is::<NotLeader>())
}

/// A client whose reads always pass and whose writes pass only while this replica leads.
#[derive(Clone)]
pub struct Writer {
    client: kube::Client,
}

impl Writer {
    /// Gates the writes of `client` on `leader`.
    pub fn new(client: kube::Client, leader: LeaderGate) -> Self {
        let default_namespace = client.default_namespace().to_string();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let client = client.clone();
            let leader = leader.clone();
            async move {
                if !is_read(request.method()) && !leader.is_leader() {
                    return Err(tower::BoxError::from(NotLeader));
                }
                // An error of the inner client comes back out of the outer one unchanged (kube
                // unwraps a boxed `kube::Error`), so callers still see API statuses as such.
                client.send(request).await.map_err(tower::BoxError::from)
            }
        });
        Writer {
            client: kube::Client::new(service, default_namespace),
        }
    }

    /// The gated client, for code that takes a client (the traffic routers, the Event recorder).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The gated API of a namespaced kind.
    pub fn namespaced<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// Requests that change nothing: everything else is a write.
fn is_read(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::PostParams;

    use super::*;

    /// A client whose API server records the method of every request it receives and answers
    /// each with an empty ConfigMap.
    fn recording_client() -> (kube::Client, Arc<Mutex<Vec<http::Method>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            log.lock().unwrap().push(request.method().clone());
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "default"}
            });
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(
                    body.to_string().into_bytes(),
                )))
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    fn config_map() -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_replica_that_does_not_lead_reads_but_writes_nothing() {
        let (client, seen) = recording_client();
        let writer = Writer::new(client, LeaderGate::never());
        let api: Api<ConfigMap> = writer.namespaced("default");
        api.get("c").await.expect("reads pass");
        let err = api
            .create(&PostParams::default(), &config_map())
            .await
            .expect_err("the write is refused");
        assert!(is_not_leader(&err), "{err:?}");
        let err = api
            .delete("c", &Default::default())
            .await
            .expect_err("the delete is refused");
        assert!(is_not_leader(&err), "{err:?}");
        assert_eq!(*seen.lock().unwrap(), [http::Method::GET]);
    }

    #[tokio::test]
    async fn the_leader_writes() {
        let (client, seen) = recording_client();
        let writer = Writer::new(client, LeaderGate::always());
        let api: Api<ConfigMap> = writer.namespaced("default");
        api.create(&PostParams::default(), &config_map())
            .await
            .expect("the leader's write passes");
        assert_eq!(*seen.lock().unwrap(), [http::Method::POST]);
    }
}
