//! The simulated Job controller and the kubelet's part for Job pods (a child module of
//! [`crate::sim`]).
//!
//! A Job's pods run for real: the first container's `command` and `args` are executed as a local
//! process (`sh -c "exit 1"`, `sleep 30`), and its exit code decides the pod (0: Succeeded,
//! anything else: Failed). A container without a `command` succeeds once the pod has started
//! (its image's entrypoint is taken to succeed). The controller counts succeeded and failed pods
//! against `completions`, `parallelism` and `backoffLimit`, fails the Job past its
//! `activeDeadlineSeconds`, and writes the status conditions Kubernetes writes
//! (`SuccessCriteriaMet` then `Complete`; `FailureTarget` then `Failed`). A finished Job's
//! running pods are deleted; deleting a pod (or its Job) stops its process.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Sim, controller_of, differs, is_deleting, owner_ref, s};
use crate::clock::{format_time, parse_time};
use crate::store::{DeleteOpts, WriteCtx};

/// What became of a Job pod's process.
pub(crate) enum JobPod {
    /// Started; dropping the child stops it.
    Running {
        _child_guard: tokio::sync::oneshot::Sender<()>,
        started_at: String,
    },
    /// Exited with this code (128 when it could not be started), with a reason.
    Exited {
        code: i32,
        reason: String,
        message: Option<String>,
        started_at: String,
        finished_at: String,
    },
}

/// The Job pods' processes, by pod uid.
pub(crate) type JobPods = HashMap<String, JobPod>;

/// Label the Job controller puts on its pods (and the older, unprefixed form).
const JOB_NAME_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];
const CONTROLLER_UID_LABELS: [&str; 2] = ["batch.kubernetes.io/controller-uid", "controller-uid"];

/// True for a pod whose controller is a Job: its lifecycle is simulated here, not by the
/// long-running-pod kubelet.
pub(crate) fn is_job_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners.iter().any(|o| {
                o.get("controller").and_then(Value::as_bool) == Some(true)
                    && o.get("kind").and_then(Value::as_str) == Some("Job")
            })
        })
}

fn int(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

fn condition_true(job: &Value, kind: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| s(c, "/type") == kind && s(c, "/status") == "True")
        })
}

impl Sim {
    /// One pass of the Job controller and of the Job pods' kubelet; returns when it next needs to
    /// run for time-based reasons (a pod start, a deadline).
    pub(crate) fn jobs(self: &Arc<Self>) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(t) = self.job_pods() {
            at(t);
        }
        let job_res = self.res("batch", "jobs");
        let pod_res = self.res("", "pods");
        let (jobs, _) = self.store.list(&job_res.key(), None);
        let (pods, _) = self.store.list(&pod_res.key(), None);
        let ctx = WriteCtx::manager("job-controller");
        let wall = self.store.clock.now();
        for job in jobs.iter().filter(|j| !is_deleting(j)) {
            let ns = s(job, "/metadata/namespace");
            let name = s(job, "/metadata/name");
            let uid = s(job, "/metadata/uid");
            let owned: Vec<&Arc<Value>> = pods
                .iter()
                .filter(|p| controller_of(p) == Some(uid))
                .collect();
            let phase = |p: &Value| s(p, "/status/phase").to_string();
            let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
            let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i64;
            let active: Vec<&&Arc<Value>> = owned
                .iter()
                .filter(|p| !is_deleting(p) && !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
                .collect();
            let finished = condition_true(job, "Complete") || condition_true(job, "Failed");
            let completions = int(job, "/spec/completions").unwrap_or(1).max(0);
            let parallelism = int(job, "/spec/parallelism").unwrap_or(1).max(0);
            let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(6).max(0);
            let start = job
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .and_then(parse_time)
                .unwrap_or(wall);
            let mut status = job.get("status").cloned().unwrap_or(json!({}));
            if !status.is_object() {
                status = json!({});
            }
            if status.get("startTime").is_none() && !finished {
                status["startTime"] = json!(format_time(start));
            }
            let mut conditions: Vec<Value> = status
                .get("conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut stop_active = finished;
            if !finished {
                let now_text = format_time(wall);
                let cond = |kind: &str, reason: &str, message: &str| {
                    json!({"type": kind, "status": "True", "reason": reason, "message": message,
                        "lastProbeTime": now_text, "lastTransitionTime": now_text})
                };
                let deadline = int(job, "/spec/activeDeadlineSeconds")
                    .map(|secs| start + jiff::SignedDuration::from_secs(secs));
                let failure = if deadline.is_some_and(|d| wall >= d) {
                    Some((
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline",
                    ))
                } else if failed > backoff_limit {
                    Some((
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ))
                } else {
                    None
                };
                if let Some((reason, message)) = failure {
                    conditions.push(cond("FailureTarget", reason, message));
                    conditions.push(cond("Failed", reason, message));
                    stop_active = true;
                } else if succeeded >= completions {
                    let message = "Reached expected number of succeeded pods";
                    conditions.push(cond("SuccessCriteriaMet", "CompletionsReached", message));
                    conditions.push(cond("Complete", "CompletionsReached", message));
                    status["completionTime"] = json!(now_text);
                    stop_active = true;
                } else {
                    if let Some(d) = deadline {
                        at(self.store.clock.instant_of(d));
                    }
                    let wanted = parallelism.min(completions - succeeded) - active.len() as i64;
                    for _ in 0..wanted.max(0) {
                        self.create_job_pod(job, &ctx);
                    }
                }
            }
            if stop_active {
                for p in &active {
                    let _ = self.store.delete(
                        &pod_res,
                        ns,
                        s(p, "/metadata/name"),
                        &DeleteOpts::default(),
                    );
                }
            }
            let still_active = if stop_active { 0 } else { active.len() };
            let ready = active
                .iter()
                .filter(|p| !stop_active && self.is_ready(p))
                .count();
            status["active"] = json!(still_active);
            status["ready"] = json!(ready);
            status["succeeded"] = json!(succeeded);
            status["failed"] = json!(failed);
            status["terminating"] = json!(owned.iter().filter(|p| is_deleting(p)).count());
            status["uncountedTerminatedPods"] = json!({});
            if !conditions.is_empty() {
                status["conditions"] = json!(conditions);
            }
            for f in ["active", "succeeded", "failed"] {
                if status[f] == json!(0) {
                    status.as_object_mut().expect("object").remove(f);
                }
            }
            if differs(job.get("status"), &status) {
                let mut obj = (**job).clone();
                obj["status"] = status;
                let _ = self
                    .store
                    .update(&ctx, &job_res, "v1", ns, name, obj, Some("status"));
            }
        }
        next
    }

    fn create_job_pod(&self, job: &Value, ctx: &WriteCtx) {
        let pod_res = self.res("", "pods");
        let ns = s(job, "/metadata/namespace");
        let name = s(job, "/metadata/name");
        let uid = s(job, "/metadata/uid");
        let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
        let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
        if !meta.is_object() {
            meta = json!({});
        }
        meta["generateName"] = json!(format!("{name}-"));
        meta["namespace"] = json!(ns);
        meta["ownerReferences"] = json!([owner_ref(job, "batch/v1", "Job")]);
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta["labels"] = json!({});
        }
        for l in JOB_NAME_LABELS {
            meta["labels"][l] = json!(name);
        }
        for l in CONTROLLER_UID_LABELS {
            meta["labels"][l] = json!(uid);
        }
        if let Some(m) = meta.as_object_mut() {
            m.remove("name");
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": template.get("spec").cloned().unwrap_or(json!({}))});
        if let Err(e) = self.store.create(ctx, &pod_res, "v1", ns, pod) {
            tracing::warn!(job = name, error = %e.message, "simulated job controller could not create a pod");
        }
    }

    /// The kubelet for Job pods: start each pod's process after the pod start delay, and write
    /// Running, then Succeeded or Failed from its exit code.
    fn job_pods(self: &Arc<Self>) -> Option<Instant> {
        let pod_res = self.res("", "pods");
        let (pods, _) = self.store.list(&pod_res.key(), None);
        let settings = self.settings();
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut procs = self.job_pods.lock().unwrap_or_else(|e| e.into_inner());
        let live: std::collections::HashSet<&str> = pods
            .iter()
            .filter(|p| is_job_pod(p) && !is_deleting(p))
            .map(|p| s(p, "/metadata/uid"))
            .collect();
        // A pod that goes (or is being deleted) has its process stopped here.
        procs.retain(|uid, _| live.contains(uid.as_str()));
        for pod in pods.iter().filter(|p| is_job_pod(p) && !is_deleting(p)) {
            let uid = s(pod, "/metadata/uid").to_string();
            if matches!(s(pod, "/status/phase"), "Succeeded" | "Failed") {
                continue;
            }
            let created = s(pod, "/metadata/creationTimestamp");
            let created_at = parse_time(created)
                .map(|t| self.store.clock.instant_of(t))
                .unwrap_or(now);
            let start_at = created_at + settings.pod_ready_delay;
            if !procs.contains_key(&uid) {
                if now < start_at {
                    next = Some(next.map_or(start_at, |n: Instant| n.min(start_at)));
                    self.write_job_pod_status(pod, None);
                    continue;
                }
                let state = self.start_job_process(pod);
                procs.insert(uid.clone(), state);
            }
            self.write_job_pod_status(pod, procs.get(&uid));
        }
        next
    }

    fn start_job_process(self: &Arc<Self>, pod: &Value) -> JobPod {
        let started_at = self.store.clock.now_rfc3339();
        let container = pod
            .pointer("/spec/containers/0")
            .cloned()
            .unwrap_or(json!({}));
        let strings = |key: &str| -> Vec<String> {
            container
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        };
        let command = strings("command");
        let args = strings("args");
        let Some((program, rest)) = command.split_first() else {
            // No command: the image's own entrypoint, taken to succeed.
            return JobPod::Exited {
                code: 0,
                reason: "Completed".into(),
                message: None,
                finished_at: started_at.clone(),
                started_at,
            };
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(rest)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for e in container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(v) = e.get("value").and_then(Value::as_str) {
                cmd.env(s(e, "/name"), v);
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return JobPod::Exited {
                    code: 128,
                    reason: "StartError".into(),
                    message: Some(format!("failed to start {program:?}: {e}")),
                    finished_at: started_at.clone(),
                    started_at,
                };
            }
        };
        let uid = s(pod, "/metadata/uid").to_string();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sim = self.clone();
        let start_text = started_at.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                // The pod went: dropping the child kills the process.
                _ = stop_rx => return,
            };
            let code = match status {
                Ok(st) => st.code().unwrap_or(137),
                Err(_) => 128,
            };
            let mut procs = sim.job_pods.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = procs.get_mut(&uid) {
                *state = JobPod::Exited {
                    code,
                    reason: if code == 0 { "Completed" } else { "Error" }.into(),
                    message: None,
                    started_at: start_text,
                    finished_at: sim.store.clock.now_rfc3339(),
                };
            }
            drop(procs);
            sim.store.changed.notify_one();
        });
        JobPod::Running {
            _child_guard: stop_tx,
            started_at,
        }
    }

    fn write_job_pod_status(&self, pod: &Value, state: Option<&JobPod>) {
        let pod_res = self.res("", "pods");
        let created = s(pod, "/metadata/creationTimestamp");
        let cond = |kind: &str, ok: bool, since: &str, reason: Option<&str>| {
            let mut c = json!({"type": kind, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            c
        };
        let container = pod.pointer("/spec/containers/0");
        let container_status = |ready: bool, state_json: Value| {
            json!([{
                "name": container.and_then(|c| c.get("name")), "image": container.and_then(|c| c.get("image")),
                "imageID": "", "containerID": format!("sim://{}", s(pod, "/metadata/uid")),
                "ready": ready, "started": ready, "restartCount": 0, "state": state_json,
            }])
        };
        let status = match state {
            None => {
                json!({"phase": "Pending", "conditions": [cond("PodScheduled", true, created, None)], "qosClass": "BestEffort"})
            }
            Some(JobPod::Running { started_at, .. }) => json!({
                "phase": "Running",
                "conditions": [
                    cond("PodReadyToStartContainers", true, started_at, None),
                    cond("Initialized", true, created, None),
                    cond("Ready", true, started_at, None),
                    cond("ContainersReady", true, started_at, None),
                    cond("PodScheduled", true, created, None),
                ],
                "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": started_at,
                "containerStatuses": container_status(true, json!({"running": {"startedAt": started_at}})),
                "qosClass": "BestEffort",
            }),
            Some(JobPod::Exited {
                code,
                reason,
                message,
                started_at,
                finished_at,
            }) => {
                let mut terminated = json!({"exitCode": code, "reason": reason,
                    "startedAt": started_at, "finishedAt": finished_at,
                    "containerID": format!("sim://{}", s(pod, "/metadata/uid"))});
                if let Some(m) = message {
                    terminated["message"] = json!(m);
                }
                json!({
                    "phase": if *code == 0 { "Succeeded" } else { "Failed" },
                    "conditions": [
                        cond("PodReadyToStartContainers", false, finished_at, None),
                        cond("Initialized", true, created, Some("PodCompleted")),
                        cond("Ready", false, finished_at, Some("PodCompleted")),
                        cond("ContainersReady", false, finished_at, Some("PodCompleted")),
                        cond("PodScheduled", true, created, None),
                    ],
                    "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": started_at,
                    "containerStatuses": container_status(false, json!({"terminated": terminated})),
                    "qosClass": "BestEffort",
                })
            }
        };
        if differs(pod.get("status"), &status) {
            let mut obj = pod.clone();
            obj["status"] = status;
            let _ = self.store.update(
                &WriteCtx::manager("kubelet"),
                &pod_res,
                "v1",
                s(pod, "/metadata/namespace"),
                s(pod, "/metadata/name"),
                obj,
                Some("status"),
            );
        }
    }
}
