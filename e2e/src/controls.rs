//! Test controls: fault injection, the ordered log of write requests, and dropping watches.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP code and the matching `Status` reason, without touching the store.
    Fail(u16),
    /// Wait this long, then serve the request normally (a slow or stuck API server).
    Hang(Duration),
    /// Serve the request (a write is committed), then answer 504 as kube-apiserver's request
    /// timeout does when the handler outlives it: the client cannot know whether it happened.
    TimeoutAfterCommit,
    /// Serve the request, then break the connection in the middle of the answer: the write is
    /// committed and the client sees a transport error (a connection reset).
    ResetAfterCommit,
}

/// A fault for the next `times` requests that match every given filter.
///
/// ```text
/// cluster.inject(Fault::fail(409).verb("update").resource("replicasets").times(2));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub action: FaultAction,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: Option<String>,
    /// Plural resource name, e.g. `replicasets` or `rollouts`.
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Only requests from this identity (see [`WriteRecord::identity`]).
    pub identity: Option<String>,
    /// Only write requests (create, update, patch, delete, deletecollection).
    pub writes_only: bool,
    /// Matching requests to let through first: `Fault::fail(500).writes().skip(k)` fails the
    /// write numbered `k` (from 0) after the fault is injected.
    pub skip: usize,
    pub times: usize,
}

impl Fault {
    pub fn fail(code: u16) -> Self {
        Self::new(FaultAction::Fail(code))
    }

    pub fn hang(duration: Duration) -> Self {
        Self::new(FaultAction::Hang(duration))
    }

    /// See [`FaultAction::TimeoutAfterCommit`].
    pub fn timeout_after_commit() -> Self {
        Self::new(FaultAction::TimeoutAfterCommit)
    }

    /// See [`FaultAction::ResetAfterCommit`].
    pub fn reset_after_commit() -> Self {
        Self::new(FaultAction::ResetAfterCommit)
    }

    fn new(action: FaultAction) -> Self {
        Self {
            action,
            verb: None,
            resource: None,
            subresource: None,
            namespace: None,
            name: None,
            identity: None,
            writes_only: false,
            skip: 0,
            times: 1,
        }
    }

    /// Only write requests match.
    pub fn writes(mut self) -> Self {
        self.writes_only = true;
        self
    }

    /// Lets the first `n` matching requests through.
    pub fn skip(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_string());
        self
    }

    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_string());
        self
    }

    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.to_string());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn identity(mut self, identity: &str) -> Self {
        self.identity = Some(identity.to_string());
        self
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    fn matches(&self, req: &RequestInfo) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        eq(&self.verb, Some(req.verb.as_str()))
            && eq(&self.resource, Some(req.resource.as_str()))
            && eq(&self.subresource, req.subresource.as_deref())
            && eq(&self.namespace, req.namespace.as_deref())
            && eq(&self.name, req.name.as_deref())
            && eq(&self.identity, req.identity.as_deref())
            && (!self.writes_only
                || matches!(
                    req.verb.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                ))
    }
}

/// What a request is about, as used for faults and the write log.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestInfo {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub identity: Option<String>,
}

/// One write request (create, update, patch, delete, deletecollection) as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteRecord {
    /// Position in the log, from 0.
    pub seq: u64,
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `fieldManager` query parameter, if any.
    pub field_manager: Option<String>,
    /// The `Content-Type` of a PATCH (which patch type).
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    /// Who made the request: the `Impersonate-User` header, else the bearer token (the test
    /// cluster treats a token as the user name), else `None`.
    pub identity: Option<String>,
    /// The HTTP status code of the answer.
    pub code: u16,
    /// The request body, parsed as JSON when it is JSON or YAML.
    pub body: Option<Value>,
}

/// The mutable test controls shared by the server and the `TestCluster` handle.
#[derive(Debug, Default)]
pub struct Controls {
    faults: Mutex<Vec<Fault>>,
    writes: Mutex<Vec<WriteRecord>>,
    counts: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Per plural resource, how late watch events are delivered.
    watch_lag: Mutex<std::collections::BTreeMap<String, std::time::Duration>>,
}

impl Controls {
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Faults still armed.
    pub fn pending_faults(&self) -> Vec<Fault> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the first armed fault matching `req`, consuming one of its `times`.
    pub fn take_fault(&self, req: &RequestInfo) -> Option<FaultAction> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let pos = faults
            .iter()
            .position(|f| f.times > 0 && f.skip == 0 && f.matches(req));
        // A fault still skipping counts this request and lets it through.
        for f in faults.iter_mut().filter(|f| f.skip > 0 && f.matches(req)) {
            f.skip -= 1;
        }
        let pos = pos?;
        let action = faults[pos].action.clone();
        faults[pos].times -= 1;
        if faults[pos].times == 0 {
            faults.remove(pos);
        }
        Some(action)
    }

    /// Counts a request under `key` (`"<verb> <resource>"`, or `"expired <resource>"` for watches
    /// answered with 410).
    pub fn count(&self, key: String) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn record(&self, mut record: WriteRecord) {
        let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        record.seq = writes.len() as u64;
        writes.push(record);
    }

    pub fn writes(&self) -> Vec<WriteRecord> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Delivers every later watch event of `plural` this much late, in order: a watch that lags
    /// behind the others. Watches of different kinds are not ordered on a real API server
    /// either; this makes the lag large and certain instead of rare. `Duration::ZERO` ends it.
    pub fn lag_watch(&self, plural: &str, lag: std::time::Duration) {
        let mut map = self.watch_lag.lock().unwrap_or_else(|e| e.into_inner());
        if lag.is_zero() {
            map.remove(plural);
        } else {
            map.insert(plural.to_string(), lag);
        }
    }

    /// The lag set by [`Controls::lag_watch`] for `plural`.
    pub fn watch_lag(&self, plural: &str) -> Option<std::time::Duration> {
        self.watch_lag
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(plural)
            .copied()
    }

    pub fn clear_writes(&self) {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
