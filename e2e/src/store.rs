//! The object store: every object as JSON, one global resourceVersion, the watch history, and the
//! write semantics of kube-apiserver (create, update, patch, delete, finalizers, generation).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::clock::Clock;
use crate::error::ApiError;
use crate::managed::{self, Ownership, PathSet, Scope};
use crate::patch::{self, PatchType};
use crate::resources::{self, ResKey, ResourceDef};
use crate::schema;

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, kept in the bounded history and fanned out to watchers.
#[derive(Debug)]
pub struct StoreEvent {
    pub rv: u64,
    pub key: ResKey,
    pub namespace: String,
    pub kind: EventType,
    pub object: Arc<Value>,
    /// The previous state, so a watch with a selector can turn a change into ADDED or DELETED.
    pub old: Option<Arc<Value>>,
    line: OnceLock<String>,
}

impl StoreEvent {
    /// The event as one line of a watch stream, serialized once for all watchers.
    pub fn line(&self) -> &str {
        self.line.get_or_init(|| {
            let mut s = json!({"type": self.kind.as_str(), "object": &*self.object}).to_string();
            s.push('\n');
            s
        })
    }
}

/// Replayed events and the live receiver of a watch.
pub type Subscription = (Vec<Arc<StoreEvent>>, broadcast::Receiver<Arc<StoreEvent>>);

/// How unknown fields are treated (`fieldValidation` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// What the request body was, which decides how a strict field validation failure is worded.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum BodyForm {
    /// A whole object (POST, PUT, or the apply that creates).
    #[default]
    Object,
    /// A JSON or merge patch: the error quotes the patched object.
    Patch,
    /// A strategic merge patch: the error quotes the patch, printed as a Go map.
    StrategicPatch(String),
}

/// Who writes, and how: the parameters of one write request.
#[derive(Debug, Clone, Default)]
pub struct WriteCtx {
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub body_form: BodyForm,
    pub dry_run: bool,
    /// `force=true` on an apply: take conflicting fields from other managers.
    pub force: bool,
    /// The write is a server-side apply (creating through apply records an `Apply` entry).
    pub apply: bool,
}

impl WriteCtx {
    pub fn manager(name: &str) -> Self {
        Self {
            field_manager: Some(name.to_string()),
            ..Self::default()
        }
    }
}

/// Options of a DELETE.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
    /// `gracePeriodSeconds`: for Pods, how long the kubelet may take to stop them (0 = now).
    pub grace_period: Option<i64>,
}

/// A successful write: the resulting object and any warnings for the `Warning` header.
#[derive(Debug, Clone)]
pub struct WriteOk {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

struct Inner {
    rv: u64,
    seq: u64,
    resources: BTreeMap<ResKey, Arc<ResourceDef>>,
    objects: HashMap<ResKey, BTreeMap<(String, String), Arc<Value>>>,
    uids: HashMap<String, (ResKey, String, String)>,
    history: VecDeque<Arc<StoreEvent>>,
    /// Every event with an rv at or below this is gone from the history.
    compacted_rv: u64,
    gc_queue: Vec<String>,
    /// Objects waiting on the `foregroundDeletion` finalizer.
    foreground: std::collections::BTreeSet<(ResKey, String, String)>,
    /// The lists being paged: each continue token is served from the objects as they were at
    /// its first page (see [`Store::list_page`]).
    snapshots: VecDeque<ListSnapshot>,
}

/// The objects of one kind at the resourceVersion of a paged list's first page.
struct ListSnapshot {
    key: ResKey,
    rv: u64,
    objects: Arc<BTreeMap<(String, String), Arc<Value>>>,
}

/// How many paged lists are kept for their next pages. A token whose list was dropped gets a
/// 410, as one older than etcd's compaction does on a real API server; the client lists again.
const LIST_SNAPSHOTS: usize = 32;

/// Where a paged list continues: the resourceVersion of its first page, and the last object
/// (namespace, name) returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continue {
    pub rv: u64,
    pub namespace: String,
    pub name: String,
}

/// A continue token whose list is no longer kept.
#[derive(Debug)]
pub struct ContinueExpired;

/// The shared state of a test cluster.
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<StoreEvent>>,
    history_limit: usize,
    pub clock: Clock,
    /// Woken on every change the simulated controllers care about.
    pub changed: Notify,
    hasher: std::collections::hash_map::RandomState,
    cluster_ip_seq: std::sync::atomic::AtomicU32,
    /// Fill in the defaults of built-in kinds (see [`crate::defaults`]).
    pub builtin_defaults: bool,
    /// Enforce CRDs' `x-kubernetes-validations` (CEL) rules.
    pub cel_rules: std::sync::atomic::AtomicBool,
}

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";

const SIM_KINDS: [&str; 8] = [
    "pods",
    "replicasets",
    "deployments",
    "jobs",
    "services",
    "namespaces",
    "endpoints",
    "customresourcedefinitions",
];

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn set_meta(obj: &mut Value, field: &str, value: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = value;
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

/// `spec` and everything else outside metadata and status: what `generation` tracks.
fn generation_relevant(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a name as a DNS-1123 subdomain (or label, for namespaces).
fn check_name(name: &str, label_only: bool) -> Result<(), String> {
    let max = if label_only { 63 } else { 253 };
    let ok_chars = name.chars().all(|c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (c == '.' && !label_only)
    });
    let ok_ends = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() > max || !ok_chars || !ok_ends {
        let what = if label_only {
            "RFC 1123 label"
        } else {
            "RFC 1123 subdomain"
        };
        return Err(format!(
            "Invalid value: {name:?}: a lowercase {what} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

impl Store {
    pub fn new(clock: Clock, history_limit: usize) -> Arc<Self> {
        let (events, _) = broadcast::channel(history_limit.max(1024) * 4);
        let mut resources = BTreeMap::new();
        for r in resources::builtins() {
            resources.insert(ResKey::new(&r.group, &r.plural), Arc::new(r));
        }
        let store = Arc::new(Self {
            inner: Mutex::new(Inner {
                rv: 0,
                seq: 0,
                resources,
                objects: HashMap::new(),
                uids: HashMap::new(),
                history: VecDeque::new(),
                compacted_rv: 0,
                gc_queue: Vec::new(),
                foreground: Default::default(),
                snapshots: VecDeque::new(),
            }),
            events,
            history_limit,
            clock,
            changed: Notify::new(),
            hasher: Default::default(),
            cluster_ip_seq: Default::default(),
            builtin_defaults: true,
            cel_rules: std::sync::atomic::AtomicBool::new(true),
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let res = store
                .resource("", "namespaces")
                .expect("namespaces are built in");
            store
                .create(&WriteCtx::manager("kube-apiserver"), &res, "v1", "", obj)
                .expect("seeding a namespace cannot fail");
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn resource(&self, group: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.lock()
            .resources
            .get(&ResKey::new(group, plural))
            .cloned()
    }

    pub fn resources(&self) -> Vec<Arc<ResourceDef>> {
        self.lock().resources.values().cloned().collect()
    }

    pub fn subscribe_all(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.events.subscribe()
    }

    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Every object of a type (in one namespace, or all), sorted by namespace then name, with the
    /// resourceVersion the list is consistent with.
    pub fn list(&self, key: &ResKey, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = match inner.objects.get(key) {
            None => Vec::new(),
            Some(map) => match ns {
                Some(ns) => map
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
                None => map.values().cloned().collect(),
            },
        };
        (items, inner.rv)
    }

    /// One page of a list: up to `limit` matching objects after the key `after`, in
    /// (namespace, name) order, how many more match, and the current resourceVersion.
    /// One page of a list: at most `limit` objects after `after`, how many matching objects
    /// remain, and the resourceVersion of the list. As etcd serves a real API server's pages,
    /// every page of one list shows the objects as they were at its first page, and carries
    /// that page's resourceVersion: a client that watches from it gets every change made while
    /// it was paging (with the current objects and the last page's later version instead,
    /// changes made between pages to objects already listed were lost).
    pub fn list_page(
        &self,
        key: &ResKey,
        ns: Option<&str>,
        after: Option<&Continue>,
        limit: usize,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<(Vec<Arc<Value>>, usize, u64), ContinueExpired> {
        use std::ops::Bound;
        type Objects = BTreeMap<(String, String), Arc<Value>>;
        let lower = match (after, ns) {
            (Some(c), _) => Bound::Excluded((c.namespace.clone(), c.name.clone())),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let page_of = |objects: &Objects| {
            let mut iter = objects
                .range((lower.clone(), Bound::Unbounded))
                .take_while(|((n, _), _)| ns.is_none_or(|ns| n == ns))
                .map(|(_, v)| v)
                .filter(|v| matches(v));
            let page: Vec<Arc<Value>> = iter.by_ref().take(limit).cloned().collect();
            (page, iter.count())
        };
        let mut inner = self.lock();
        if let Some(c) = after {
            let snapshot = inner
                .snapshots
                .iter()
                .find(|s| &s.key == key && s.rv == c.rv)
                .ok_or(ContinueExpired)?;
            let (page, remaining) = page_of(&snapshot.objects);
            return Ok((page, remaining, c.rv));
        }
        let rv = inner.rv;
        let Some(objects) = inner.objects.get(key) else {
            return Ok((Vec::new(), 0, rv));
        };
        let (page, remaining) = page_of(objects);
        if remaining > 0 {
            // More pages follow: they are served from the objects as they are now.
            let objects = Arc::new(objects.clone());
            inner.snapshots.retain(|s| !(&s.key == key && s.rv == rv));
            if inner.snapshots.len() >= LIST_SNAPSHOTS {
                inner.snapshots.pop_front();
            }
            inner.snapshots.push_back(ListSnapshot {
                key: key.clone(),
                rv,
                objects,
            });
        }
        Ok((page, remaining, rv))
    }

    pub fn uid_exists(&self, uid: &str) -> bool {
        self.lock().uids.contains_key(uid)
    }

    /// Objects in foreground deletion (still stored, with the `foregroundDeletion` finalizer).
    pub fn foreground_deletions(&self) -> Vec<(ResKey, String, String)> {
        let mut inner = self.lock();
        let present: Vec<_> = inner
            .foreground
            .iter()
            .filter(|(k, ns, name)| {
                inner
                    .objects
                    .get(k)
                    .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
            })
            .cloned()
            .collect();
        inner.foreground = present.iter().cloned().collect();
        present
    }

    pub fn take_gc_queue(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().gc_queue)
    }

    /// Forgets the whole watch history, so any watch resumed from an earlier version gets 410.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.compacted_rv = inner.rv;
        inner.history.clear();
    }

    /// The current objects of a type and a live receiver subscribed at the same version, with no
    /// gap between them (for watches that start "now").
    pub fn snapshot_and_subscribe(
        &self,
        key: &ResKey,
    ) -> (Vec<Arc<Value>>, u64, broadcast::Receiver<Arc<StoreEvent>>) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(key)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        (items, inner.rv, self.events.subscribe())
    }

    /// Events after `from` for one type (replay), and a live receiver subscribed with no gap.
    pub fn subscribe(&self, key: &ResKey, from: u64) -> Result<Subscription, ApiError> {
        let inner = self.lock();
        if from < inner.compacted_rv {
            return Err(ApiError::expired(format!(
                "too old resource version: {from} ({})",
                inner.compacted_rv + 1
            )));
        }
        let replay = inner
            .history
            .iter()
            .filter(|e| e.rv > from && &e.key == key)
            .cloned()
            .collect();
        Ok((replay, self.events.subscribe()))
    }

    fn next_suffix(&self, inner: &mut Inner) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        inner.seq += 1;
        let mut h = self.hasher.hash_one(inner.seq);
        (0..5)
            .map(|_| {
                let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
                h /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn new_uid(&self, inner: &mut Inner) -> String {
        inner.seq += 1;
        let a = self.hasher.hash_one(inner.seq);
        let b = self.hasher.hash_one(!inner.seq);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// Stores `new` (or removes the object when `new` is `None`), bumps the resourceVersion and
    /// emits the watch event. Must be called with the lock held.
    fn commit(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        ns: &str,
        name: &str,
        new: Option<Value>,
        old: Option<Arc<Value>>,
    ) -> Arc<Value> {
        inner.rv += 1;
        let rv = inner.rv;
        let key = res.key();
        let map = inner.objects.entry(key.clone()).or_default();
        let (kind, object) = match new {
            Some(mut obj) => {
                set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
                let obj = Arc::new(obj);
                map.insert((ns.to_string(), name.to_string()), obj.clone());
                let kind = if old.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                if let Some(uid) = meta_str(&obj, "uid") {
                    inner.uids.insert(
                        uid.to_string(),
                        (key.clone(), ns.to_string(), name.to_string()),
                    );
                }
                (kind, obj)
            }
            None => {
                map.remove(&(ns.to_string(), name.to_string()));
                let mut last = old.as_deref().cloned().unwrap_or(Value::Null);
                set_meta(&mut last, "resourceVersion", json!(rv.to_string()));
                if let Some(uid) = meta_str(&last, "uid") {
                    inner.uids.remove(uid);
                    inner.gc_queue.push(uid.to_string());
                }
                (EventType::Deleted, Arc::new(last))
            }
        };
        let event = Arc::new(StoreEvent {
            rv,
            key: key.clone(),
            namespace: ns.to_string(),
            kind,
            object: object.clone(),
            old,
            line: OnceLock::new(),
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > self.history_limit {
            if let Some(e) = inner.history.pop_front() {
                inner.compacted_rv = e.rv;
            }
        }
        // No receiver is fine: nobody watches yet.
        let _ = self.events.send(event);
        if SIM_KINDS.contains(&key.plural.as_str()) || kind == EventType::Deleted {
            self.changed.notify_one();
        }
        object
    }

    /// Validates and normalizes an object of `res` served at `version`; returns warnings.
    fn validate(
        &self,
        res: &ResourceDef,
        version: &str,
        obj: &mut Value,
        ctx: &WriteCtx,
        name: &str,
        old: Option<&Value>,
    ) -> Result<Vec<String>, ApiError> {
        if let Some(check) = res.typed_check {
            let patched = Self::strict_patched(ctx, obj);
            let unknown =
                crate::openapi::prune_builtin(&res.group, &res.kind, obj).unwrap_or_default();
            let meta = obj.get("metadata").cloned();
            // A quantity that does not parse fails the decoding, before any validation.
            if let Some(e) = crate::pod_validation::decode_error(res, obj) {
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{version}\" cannot be handled as a {}: {e}",
                    res.kind, res.kind
                )));
            }
            *obj = check(obj).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{version}\" cannot be handled as a {}: {e}",
                    res.kind, res.kind
                ))
            })?;
            // Keep metadata exactly as given (the typed round trip would drop nothing there, but
            // this keeps field order stable for byte comparisons of no-op updates).
            if let Some(meta) = meta {
                obj["metadata"] = meta;
            }
            if self.builtin_defaults {
                let seq = &self.cluster_ip_seq;
                crate::defaults::apply(&res.plural, obj, &mut || {
                    let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 10;
                    format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
                });
            }
            crate::events::validate_core_write(res, obj)?;
            crate::pod_validation::validate(res, obj, old.is_none())?;
            return Self::field_validation(ctx, res, version, &unknown, patched.as_deref());
        }
        let Some(def) = res.version(version) else {
            return Ok(Vec::new());
        };
        let Some(schema) = def.schema.as_ref() else {
            return Ok(Vec::new());
        };
        let patched = Self::strict_patched(ctx, obj);
        let mut unknown = crate::openapi::prune_metadata(obj);
        let outcome = schema::apply(schema, obj);
        unknown.extend(outcome.pruned.iter().cloned());
        // Unknown fields fail in decoding, before any validation runs.
        if ctx.field_validation == FieldValidation::Strict {
            Self::field_validation(ctx, res, version, &unknown, patched.as_deref())?;
        }
        if !outcome.errors.is_empty() {
            return Err(ApiError::invalid(
                &res.kind,
                &res.group,
                name,
                outcome.errors,
            ));
        }
        let root = kube_cel::RootContext {
            api_version: res.api_version(version),
            api_group: res.group.clone(),
            kind: res.kind.clone(),
        };
        let cel = if self.cel_rules.load(std::sync::atomic::Ordering::Relaxed) {
            schema::cel_errors(schema, def.schema_id, obj, old, &root)
        } else {
            Vec::new()
        };
        if !cel.is_empty() {
            return Err(ApiError::invalid(&res.kind, &res.group, name, cel));
        }
        Self::field_validation(ctx, res, version, &unknown, patched.as_deref())
    }

    /// The patched object as a strict patch error would quote it, taken before pruning.
    fn strict_patched(ctx: &WriteCtx, obj: &Value) -> Option<String> {
        match &ctx.body_form {
            _ if ctx.field_validation != FieldValidation::Strict => None,
            BodyForm::Object => None,
            BodyForm::Patch => Some(obj.to_string()),
            BodyForm::StrategicPatch(patch) => Some(patch.clone()),
        }
    }

    /// `fieldValidation` on the unknown fields of a write (already removed from the object):
    /// `Warn` turns each into a warning, `Strict` fails the write as kube-apiserver words it.
    /// Apply bodies were checked before merging (see `patch`).
    fn field_validation(
        ctx: &WriteCtx,
        res: &ResourceDef,
        version: &str,
        unknown: &[String],
        patched: Option<&str>,
    ) -> Result<Vec<String>, ApiError> {
        if unknown.is_empty() || ctx.apply {
            return Ok(Vec::new());
        }
        let errors: Vec<String> = unknown
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        match ctx.field_validation {
            FieldValidation::Ignore => Ok(Vec::new()),
            FieldValidation::Warn => Ok(errors),
            FieldValidation::Strict => Err(match patched {
                Some(patched) => ApiError::strict_patch(patched, &errors),
                None => ApiError::strict_decoding(&res.kind, version, &errors),
            }),
        }
    }

    fn check_type_meta(res: &ResourceDef, version: &str, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let expected = res.api_version(version);
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && av != expected
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({expected})"
            )));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != res.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                res.kind
            )));
        }
        obj["apiVersion"] = json!(expected);
        obj["kind"] = json!(res.kind);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        Ok(())
    }

    fn check_namespace(
        inner: &Inner,
        res: &ResourceDef,
        ns: &str,
        creating: bool,
    ) -> Result<(), ApiError> {
        if !res.namespaced {
            return Ok(());
        }
        let Some(nsobj) = inner
            .objects
            .get(&ResKey::new("", "namespaces"))
            .and_then(|m| m.get(&(String::new(), ns.to_string())))
        else {
            return Err(ApiError::not_found("namespaces", ns));
        };
        if creating && nsobj.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "{} \"\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    res.qualified()
                ),
            ));
        }
        Ok(())
    }

    /// POST: creates an object.
    pub fn create(
        &self,
        ctx: &WriteCtx,
        res: &ResourceDef,
        version: &str,
        ns: &str,
        mut obj: Value,
    ) -> Result<WriteOk, ApiError> {
        if crate::events::is_events_api(res) {
            return self.create_events_v1(ctx, res, version, ns, obj);
        }
        Self::check_type_meta(res, version, &mut obj)?;
        if meta_str(&obj, "resourceVersion").is_some() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if res.namespaced {
            if let Some(body_ns) = meta_str(&obj, "namespace")
                && body_ns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            set_meta(&mut obj, "namespace", json!(ns));
        } else {
            remove_meta(&mut obj, "namespace");
        }
        let mut inner = self.lock();
        let name = match meta_str(&obj, "name") {
            Some(n) => n.to_string(),
            None => match meta_str(&obj, "generateName") {
                Some(prefix) => {
                    let prefix = prefix.to_string();
                    format!("{prefix}{}", self.next_suffix(&mut inner))
                }
                None => {
                    return Err(ApiError::invalid(
                        &res.kind,
                        &res.group,
                        "",
                        vec![(
                            "metadata.name".into(),
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            },
        };
        set_meta(&mut obj, "name", json!(name));
        if let Err(msg) = check_name(&name, res.plural == "namespaces") {
            return Err(ApiError::invalid(
                &res.kind,
                &res.group,
                &name,
                vec![("metadata.name".into(), msg)],
            ));
        }
        Self::check_namespace(&inner, res, ns, true)?;
        if inner
            .objects
            .get(&res.key())
            .is_some_and(|m| m.contains_key(&(ns.to_string(), name.clone())))
        {
            return Err(ApiError::already_exists(&res.qualified(), &name));
        }
        if res.has_status(version)
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let warnings = self.validate(res, version, &mut obj, ctx, &name, None)?;
        let crd_def =
            if res.key() == ResKey::new("apiextensions.k8s.io", "customresourcedefinitions") {
                crate::crd_validation::check(&obj, None)?;
                let def = resources::from_crd(&obj)?;
                if inner.resources.get(&def.key()).is_some_and(|r| !r.custom) {
                    return Err(ApiError::invalid(
                        &res.kind,
                        &res.group,
                        &name,
                        vec![(
                            "spec.names.plural".into(),
                            "Invalid value: collides with a built-in resource".into(),
                        )],
                    ));
                }
                Some(def)
            } else {
                None
            };
        let now = self.clock.now_rfc3339();
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            remove_meta(&mut obj, field);
        }
        let uid = self.new_uid(&mut inner);
        set_meta(&mut obj, "uid", json!(uid));
        set_meta(&mut obj, "creationTimestamp", json!(now));
        if res.has_generation {
            set_meta(&mut obj, "generation", json!(1));
        } else {
            remove_meta(&mut obj, "generation");
        }
        if let Some(def) = &crd_def {
            obj["status"] = crd_status(&obj, def);
        }
        if res.plural == "namespaces" {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        if let Some(manager) = &ctx.field_manager {
            let scope = Scope::Main {
                skip_status: res.has_status(version),
            };
            let ownership = if ctx.apply {
                Ownership::Apply {
                    paths: managed::leaves(&obj, scope),
                    forced: PathSet::new(),
                }
            } else {
                Ownership::Update
            };
            let entries = managed::record(
                &json!({}),
                &obj,
                scope,
                manager,
                None,
                &res.api_version(version),
                &now,
                &ownership,
            );
            set_meta(&mut obj, "managedFields", managed::to_json(&entries));
        }
        if ctx.dry_run {
            return Ok(WriteOk {
                object: obj,
                created: true,
                warnings,
            });
        }
        if let Some(def) = crd_def {
            inner.resources.insert(def.key(), Arc::new(def));
        }
        let stored = self.commit(&mut inner, res, ns, &name, Some(obj), None);
        Ok(WriteOk {
            object: (*stored).clone(),
            created: true,
            warnings,
        })
    }

    /// PUT: replaces an object (or its status with `subresource = Some("status")`).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &self,
        ctx: &WriteCtx,
        res: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        obj: Value,
        subresource: Option<&str>,
    ) -> Result<WriteOk, ApiError> {
        if crate::events::is_events_api(res) {
            return self.write_events_v1(ctx, res, version, ns, name, EventsV1Write::Replace(obj));
        }
        let mut inner = self.lock();
        self.update_locked(
            &mut inner,
            ctx,
            res,
            version,
            ns,
            name,
            obj,
            subresource,
            Ownership::Update,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn update_locked(
        &self,
        inner: &mut Inner,
        ctx: &WriteCtx,
        res: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        mut obj: Value,
        subresource: Option<&str>,
        ownership: Ownership,
    ) -> Result<WriteOk, ApiError> {
        Self::check_type_meta(res, version, &mut obj)?;
        let old = inner
            .objects
            .get(&res.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.qualified(), name))?;
        if let Some(body_name) = meta_str(&obj, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old_rv = meta_str(&old, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        match meta_str(&obj, "resourceVersion") {
            Some(rv) if rv != old_rv => return Err(ApiError::conflict(&res.qualified(), name)),
            Some(_) => {}
            None if res.custom && matches!(ownership, Ownership::Update) => {
                return Err(ApiError::invalid(
                    &res.kind,
                    &res.group,
                    name,
                    vec![(
                        "metadata.resourceVersion".into(),
                        "Invalid value: 0x0: must be specified for an update".into(),
                    )],
                ));
            }
            None => {}
        }
        let mut new = if subresource == Some("status") {
            // Writes to /status change only .status.
            let mut new = (*old).clone();
            match obj.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new
        } else {
            if res.has_status(version) {
                // Writes to the object keep the stored status.
                match old.get("status") {
                    Some(status) => obj["status"] = status.clone(),
                    None => {
                        if let Some(m) = obj.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            obj
        };
        // Server-managed metadata is kept from the stored object.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            match old.pointer(&format!("/metadata/{field}")) {
                Some(v) => set_meta(&mut new, field, v.clone()),
                None => remove_meta(&mut new, field),
            }
        }
        set_meta(&mut new, "name", json!(name));
        if res.namespaced {
            set_meta(&mut new, "namespace", json!(ns));
        } else {
            remove_meta(&mut new, "namespace");
        }
        set_meta(&mut new, "resourceVersion", json!(old_rv));
        let being_deleted = old.pointer("/metadata/deletionTimestamp").is_some();
        let old_finalizers = finalizers(&old);
        if being_deleted && finalizers(&new).iter().any(|f| !old_finalizers.contains(f)) {
            return Err(ApiError::invalid(
                &res.kind,
                &res.group,
                name,
                vec![(
                    "metadata.finalizers".into(),
                    "Forbidden: no new finalizers can be added if the object is being deleted"
                        .into(),
                )],
            ));
        }
        if res.key() == ResKey::new("", "services") {
            // Allocated addresses survive an update that leaves them out, as on a real server.
            for field in ["clusterIP", "clusterIPs"] {
                let missing = new
                    .pointer(&format!("/spec/{field}"))
                    .is_none_or(|v| v.is_null() || v == "");
                if missing
                    && let Some(v) = old.pointer(&format!("/spec/{field}"))
                    && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
                {
                    spec.insert(field.to_string(), v.clone());
                }
            }
        }
        let warnings = self.validate(res, version, &mut new, ctx, name, Some(&old))?;
        if res.has_generation && generation_relevant(&new) != generation_relevant(&old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut new, "generation", json!(generation + 1));
        }
        let is_crd = res.key() == ResKey::new("apiextensions.k8s.io", "customresourcedefinitions");
        let crd_def = if is_crd && subresource.is_none() {
            crate::crd_validation::check(&new, Some(&old))?;
            let def = resources::from_crd(&new)?;
            new["status"] = crd_status(&new, &def);
            Some(def)
        } else {
            None
        };
        if let Some(manager) = &ctx.field_manager {
            let scope = if subresource == Some("status") {
                Scope::Status
            } else {
                Scope::Main {
                    skip_status: res.has_status(version),
                }
            };
            let now = self.clock.now_rfc3339();
            let entries = managed::record(
                &old,
                &new,
                scope,
                manager,
                subresource,
                &res.api_version(version),
                &now,
                &ownership,
            );
            if !managed::same_ownership(&entries, &managed::parse(&old)) {
                set_meta(&mut new, "managedFields", managed::to_json(&entries));
            }
        }
        // A write that changes nothing is not stored: no new resourceVersion, no watch event.
        if new == *old {
            return Ok(WriteOk {
                object: (*old).clone(),
                created: false,
                warnings,
            });
        }
        if ctx.dry_run {
            return Ok(WriteOk {
                object: new,
                created: false,
                warnings,
            });
        }
        if let Some(def) = crd_def {
            inner.resources.insert(def.key(), Arc::new(def));
        }
        // As the real registry does: an object being deleted goes once no finalizer holds it,
        // unless it is still in its grace period (a terminating pod).
        let in_grace = old
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0;
        if being_deleted && finalizers(&new).is_empty() && !in_grace {
            let last = self.commit(inner, res, ns, name, None, Some(old));
            return Ok(WriteOk {
                object: (*last).clone(),
                created: false,
                warnings,
            });
        }
        let stored = self.commit(inner, res, ns, name, Some(new), Some(old));
        Ok(WriteOk {
            object: (*stored).clone(),
            created: false,
            warnings,
        })
    }

    /// PATCH, by patch type. Server-side apply creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        ctx: &WriteCtx,
        res: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        patch_type: PatchType,
        body: &Value,
        subresource: Option<&str>,
    ) -> Result<WriteOk, ApiError> {
        if patch_type == PatchType::Strategic && res.custom {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom resources: use merge patch or server-side apply",
            ));
        }
        if patch_type == PatchType::Apply && ctx.field_manager.as_deref().is_none_or(str::is_empty)
        {
            return Err(ApiError::invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                vec![(
                    "fieldManager".into(),
                    "Required value: is required for apply patch".into(),
                )],
            ));
        }
        if patch_type == PatchType::Apply {
            // Apply converts the configuration to the kind's schema first, and that fails on a
            // field the schema does not declare, whatever the fieldValidation.
            let undeclared = crate::openapi::undeclared_in_apply(res, version, body);
            if !undeclared.is_empty() {
                return Err(ApiError::undeclared_in_apply(
                    ns,
                    name,
                    &res.group,
                    version,
                    &res.kind,
                    &undeclared,
                ));
            }
        }
        let body_form = match patch_type {
            PatchType::Json | PatchType::Merge => BodyForm::Patch,
            PatchType::Strategic => BodyForm::StrategicPatch(crate::error::go_value(body)),
            PatchType::Apply => BodyForm::Object,
        };
        let ctx = &WriteCtx {
            body_form,
            ..ctx.clone()
        };
        if crate::events::is_events_api(res) {
            let write = EventsV1Write::Patch(patch_type, body, subresource);
            return self.write_events_v1(ctx, res, version, ns, name, write);
        }
        let mut inner = self.lock();
        let old = inner
            .objects
            .get(&res.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned();
        let Some(old) = old else {
            if patch_type == PatchType::Apply && subresource.is_none() {
                drop(inner);
                let mut obj = body.clone();
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                set_meta(&mut obj, "name", json!(name));
                let ctx = WriteCtx {
                    apply: true,
                    ..ctx.clone()
                };
                return self.create(&ctx, res, version, ns, obj);
            }
            return Err(ApiError::not_found(&res.qualified(), name));
        };
        let mut target = (*old).clone();
        target["apiVersion"] = json!(res.api_version(version));
        let mut apply_ownership = None;
        match patch_type {
            PatchType::Json => patch::json_patch(&mut target, body)?,
            PatchType::Merge => patch::merge_patch(&mut target, body),
            PatchType::Strategic => patch::strategic_merge(&mut target, body),
            PatchType::Apply => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("apply patch body must be an object"));
                }
                let mut applied = body.clone();
                if let Some(av) = applied.get("apiVersion").and_then(Value::as_str)
                    && av != res.api_version(version)
                {
                    return Err(ApiError::bad_request(format!(
                        "the API version in the data ({av}) does not match the expected API version ({})",
                        res.api_version(version)
                    )));
                }
                if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                }
                let scope = if subresource == Some("status") {
                    Scope::Status
                } else {
                    Scope::Main {
                        skip_status: res.has_status(version),
                    }
                };
                let manager = ctx.field_manager.clone().unwrap_or_default();
                let paths = managed::leaves(&applied, scope);
                let conflicts = managed::conflicts(&target, &applied, &manager, &paths);
                if !conflicts.is_empty() && !ctx.force {
                    return Err(managed::conflict_error(
                        &res.kind, &res.group, name, &conflicts,
                    ));
                }
                // Fields this manager applied before, left out now and owned by nobody else,
                // are removed.
                let entries = managed::parse(&old);
                let is_mine = |e: &managed::Entry| {
                    e.manager == manager
                        && e.operation == "Apply"
                        && e.subresource.as_deref() == subresource
                };
                let before: PathSet = entries
                    .iter()
                    .filter(|e| is_mine(e))
                    .flat_map(|e| e.paths.clone())
                    .collect();
                let others: PathSet = entries
                    .iter()
                    .filter(|e| !is_mine(e))
                    .flat_map(|e| e.paths.clone())
                    .collect();
                for path in before.difference(&paths) {
                    if !others.contains(path) {
                        managed::remove_at(&mut target, path);
                    }
                }
                patch::merge_patch(&mut target, &applied);
                apply_ownership = Some(Ownership::Apply {
                    paths,
                    forced: conflicts.into_iter().map(|(_, _, p)| p).collect(),
                });
            }
        }
        if meta_str(&target, "resourceVersion").is_none() {
            set_meta(
                &mut target,
                "resourceVersion",
                json!(meta_str(&old, "resourceVersion")),
            );
        }
        self.update_locked(
            &mut inner,
            ctx,
            res,
            version,
            ns,
            name,
            target,
            subresource,
            apply_ownership.unwrap_or(Ownership::Update),
        )
    }

    /// DELETE: removes the object, or marks it for deletion while finalizers remain.
    pub fn delete(
        &self,
        res: &ResourceDef,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<(Value, bool), ApiError> {
        let mut inner = self.lock();
        let old = inner
            .objects
            .get(&res.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.qualified(), name))?;
        let uid = meta_str(&old, "uid").unwrap_or_default().to_string();
        if let Some(want) = &opts.precondition_uid
            && want != &uid
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {uid}",
                    res.qualified()
                ),
            ));
        }
        if let Some(want) = &opts.precondition_rv
            && Some(want.as_str()) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                    res.qualified(),
                    meta_str(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if opts.dry_run {
            return Ok(((*old).clone(), false));
        }
        if opts.propagation.as_deref() == Some("Orphan") {
            self.orphan_dependents(&mut inner, &uid);
        }
        let foreground =
            opts.propagation.as_deref() == Some("Foreground") && res.plural != "namespaces";
        // Pods terminate gracefully: the kubelet stops them, then removes them.
        let grace = (res.plural == "pods").then(|| {
            opts.grace_period
                .or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
                .max(0)
        });
        let graceful = grace.is_some_and(|g| g > 0);
        let pending =
            foreground || graceful || !finalizers(&old).is_empty() || res.plural == "namespaces";
        let force_now = grace == Some(0) && finalizers(&old).is_empty();
        if pending || (force_now && old.pointer("/metadata/deletionTimestamp").is_some()) {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                if force_now {
                    // A forced delete (grace 0) ends a pod's termination at once.
                    let last = self.commit(&mut inner, res, ns, name, None, Some(old));
                    return Ok(((*last).clone(), false));
                }
                return Ok(((*old).clone(), true));
            }
            let mut new = (*old).clone();
            if foreground {
                // The garbage collector deletes the dependents, then drops this finalizer.
                let mut list = finalizers(&old);
                if !list.iter().any(|f| f == FOREGROUND) {
                    list.push(FOREGROUND.to_string());
                }
                set_meta(&mut new, "finalizers", json!(list));
                inner
                    .foreground
                    .insert((res.key(), ns.to_string(), name.to_string()));
            }
            set_meta(
                &mut new,
                "deletionTimestamp",
                json!(self.clock.now_rfc3339()),
            );
            set_meta(
                &mut new,
                "deletionGracePeriodSeconds",
                json!(grace.unwrap_or(0)),
            );
            if res.has_generation {
                let generation = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                set_meta(&mut new, "generation", json!(generation + 1));
            }
            if res.plural == "namespaces" {
                new["status"] = json!({"phase": "Terminating"});
            }
            let stored = self.commit(&mut inner, res, ns, name, Some(new), Some(old));
            if foreground {
                self.changed.notify_one();
            }
            return Ok(((*stored).clone(), true));
        }
        if res.key() == ResKey::new("apiextensions.k8s.io", "customresourcedefinitions") {
            self.drop_crd_objects(&mut inner, &old);
        }
        let last = self.commit(&mut inner, res, ns, name, None, Some(old));
        Ok(((*last).clone(), false))
    }

    /// Removes an object regardless of finalizers (the namespace controller finishing a namespace).
    pub fn remove(&self, res: &ResourceDef, ns: &str, name: &str) {
        let mut inner = self.lock();
        let old = inner
            .objects
            .get(&res.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned();
        if let Some(old) = old {
            self.commit(&mut inner, res, ns, name, None, Some(old));
        }
    }

    /// Objects (of any type) that name any of `uids` among their ownerReferences (one scan).
    pub fn dependents_of_any(
        &self,
        uids: &std::collections::HashSet<String>,
    ) -> Vec<(Arc<ResourceDef>, Arc<Value>)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (key, map) in &inner.objects {
            let Some(res) = inner.resources.get(key) else {
                continue;
            };
            for obj in map.values() {
                let refs = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array);
                if refs.is_some_and(|r| {
                    r.iter().any(|o| {
                        o.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| uids.contains(u))
                    })
                }) {
                    out.push((res.clone(), obj.clone()));
                }
            }
        }
        out
    }

    /// Objects (of any type) that name `uid` among their ownerReferences.
    pub fn dependents_of(&self, uid: &str) -> Vec<(Arc<ResourceDef>, Arc<Value>)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (key, map) in &inner.objects {
            let Some(res) = inner.resources.get(key) else {
                continue;
            };
            for obj in map.values() {
                let refs = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array);
                if refs.is_some_and(|r| {
                    r.iter()
                        .any(|o| o.get("uid").and_then(Value::as_str) == Some(uid))
                }) {
                    out.push((res.clone(), obj.clone()));
                }
            }
        }
        out
    }

    /// How many objects live in a namespace, over all types.
    pub fn namespace_contents(&self, ns: &str) -> Vec<(Arc<ResourceDef>, Arc<Value>)> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (key, map) in &inner.objects {
            let Some(res) = inner.resources.get(key).filter(|r| r.namespaced) else {
                continue;
            };
            for ((n, _), obj) in map.range((ns.to_string(), String::new())..) {
                if n != ns {
                    break;
                }
                out.push((res.clone(), obj.clone()));
            }
        }
        out
    }

    fn orphan_dependents(&self, inner: &mut Inner, uid: &str) {
        let mut changes = Vec::new();
        for (key, map) in &inner.objects {
            for ((ns, name), obj) in map {
                let refs = obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array);
                if refs.is_some_and(|r| {
                    r.iter()
                        .any(|o| o.get("uid").and_then(Value::as_str) == Some(uid))
                }) {
                    changes.push((key.clone(), ns.clone(), name.clone(), obj.clone()));
                }
            }
        }
        for (key, ns, name, obj) in changes {
            let Some(res) = inner.resources.get(&key).cloned() else {
                continue;
            };
            let mut new = (*obj).clone();
            if let Some(refs) = new
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(uid));
            }
            self.commit(inner, &res, &ns, &name, Some(new), Some(obj));
        }
    }

    /// Deleting a CRD deletes every object of its type, then stops serving it.
    fn drop_crd_objects(&self, inner: &mut Inner, crd: &Value) {
        let (Some(group), Some(plural)) = (
            crd.pointer("/spec/group").and_then(Value::as_str),
            crd.pointer("/spec/names/plural").and_then(Value::as_str),
        ) else {
            return;
        };
        let key = ResKey::new(group, plural);
        let Some(res) = inner.resources.get(&key).cloned() else {
            return;
        };
        let objects: Vec<_> = inner
            .objects
            .get(&key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for ((ns, name), obj) in objects {
            self.commit(inner, &res, &ns, &name, None, Some(obj));
        }
        inner.resources.remove(&key);
    }
}

/// A write of an existing Event through events.k8s.io/v1.
enum EventsV1Write<'a> {
    Replace(Value),
    Patch(PatchType, &'a Value, Option<&'a str>),
}

/// Writes through events.k8s.io/v1: checked in that API's shape and rules, stored as the core/v1
/// Event they convert to, answered in the events.k8s.io/v1 shape.
impl Store {
    fn core_events(&self) -> Result<Arc<ResourceDef>, ApiError> {
        self.resource("", "events")
            .ok_or_else(|| ApiError::internal("core/v1 events are not served"))
    }

    fn create_events_v1(
        &self,
        ctx: &WriteCtx,
        res: &ResourceDef,
        version: &str,
        ns: &str,
        mut obj: Value,
    ) -> Result<WriteOk, ApiError> {
        Self::check_type_meta(res, version, &mut obj)?;
        let core = crate::events::from_events_v1(res, version, obj, ns, None)?;
        let core_res = self.core_events()?;
        let mut ok = self.create(ctx, &core_res, "v1", ns, core)?;
        ok.object = crate::events::to_events_v1(&ok.object);
        Ok(ok)
    }

    fn write_events_v1(
        &self,
        ctx: &WriteCtx,
        res: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
        write: EventsV1Write<'_>,
    ) -> Result<WriteOk, ApiError> {
        let core_res = self.core_events()?;
        if let EventsV1Write::Patch(PatchType::Apply, body, subresource) = write {
            // Field ownership is tracked on the stored shape: the applied configuration is
            // converted as a partial Event.
            if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
                && av != res.api_version(version)
            {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    res.api_version(version)
                )));
            }
            let body = crate::events::to_core(body);
            let apply = |ctx: &WriteCtx| {
                self.patch(
                    ctx,
                    &core_res,
                    "v1",
                    ns,
                    name,
                    PatchType::Apply,
                    &body,
                    subresource,
                )
            };
            // The result is checked by this API's rules before it is written.
            let dry = WriteCtx {
                dry_run: true,
                ..ctx.clone()
            };
            let old = self.get(&core_res.key(), ns, name);
            let result = crate::events::to_events_v1(&apply(&dry)?.object);
            crate::events::from_events_v1(res, version, result, ns, old.as_deref())?;
            let mut ok = apply(ctx)?;
            ok.object = crate::events::to_events_v1(&ok.object);
            return Ok(ok);
        }
        let mut inner = self.lock();
        let old = inner
            .objects
            .get(&core_res.key())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&res.qualified(), name))?;
        let (mut obj, subresource) = match write {
            EventsV1Write::Replace(obj) => (obj, None),
            EventsV1Write::Patch(patch_type, body, subresource) => {
                // Patches are written against the shape the client sees.
                let mut target = crate::events::to_events_v1(&old);
                match patch_type {
                    PatchType::Json => patch::json_patch(&mut target, body)?,
                    PatchType::Merge => patch::merge_patch(&mut target, body),
                    PatchType::Strategic | PatchType::Apply => {
                        patch::strategic_merge(&mut target, body)
                    }
                }
                (target, subresource)
            }
        };
        Self::check_type_meta(res, version, &mut obj)?;
        let core = crate::events::from_events_v1(res, version, obj, ns, Some(&old))?;
        let mut ok = self.update_locked(
            &mut inner,
            ctx,
            &core_res,
            "v1",
            ns,
            name,
            core,
            subresource,
            Ownership::Update,
        )?;
        ok.object = crate::events::to_events_v1(&ok.object);
        Ok(ok)
    }
}

fn crd_status(crd: &Value, def: &ResourceDef) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names;
    accepted["singular"] = json!(def.singular);
    accepted["listKind"] = json!(def.list_kind);
    let stored: Vec<&str> = def
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    json!({
        "acceptedNames": accepted,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": crd.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null)},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": crd.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null)}
        ]
    })
}
