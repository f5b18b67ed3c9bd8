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
