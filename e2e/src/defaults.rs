//! Defaulting of built-in kinds, as kube-apiserver fills in fields a client left out. Without it a
//! controller that compares what it wants with what it reads back would see no difference here and
//! a difference on every reconcile against a real cluster; with it, such bugs show up in tests.
//!
//! Covered: Pod specs (in Pods and in the templates of Deployments and ReplicaSets), Deployment
//! and ReplicaSet specs, Services (including cluster IP allocation). Other kinds are stored as
//! written.

use serde_json::{Map, Value, json};

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    // `:latest` or no tag (digests aside) means Always, as the real defaulting does.
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match name.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

fn container(c: &mut Value) {
    let Some(map) = c.as_object_mut() else { return };
    let image = map
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set_default(map, "imagePullPolicy", json!(image_pull_policy(&image)));
    set_default(map, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(map, "terminationMessagePolicy", json!("File"));
    set_default(map, "resources", json!({}));
    if let Some(ports) = map.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Defaults of a PodSpec.
pub fn pod_spec(spec: &mut Value) {
    let Some(map) = spec.as_object_mut() else {
        return;
    };
    set_default(map, "restartPolicy", json!("Always"));
    set_default(map, "terminationGracePeriodSeconds", json!(30));
    set_default(map, "dnsPolicy", json!("ClusterFirst"));
    set_default(map, "securityContext", json!({}));
    set_default(map, "schedulerName", json!("default-scheduler"));
    for key in ["containers", "initContainers"] {
        if let Some(list) = map.get_mut(key).and_then(Value::as_array_mut) {
            list.iter_mut().for_each(container);
        }
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template") {
        if let Some(meta) = t.as_object_mut() {
            set_default(meta, "metadata", json!({}));
        }
        if let Some(pod) = t.get_mut("spec") {
            pod_spec(pod);
        }
    }
}

/// Applies the defaults of `plural` (a built-in resource) to `obj` in place. `cluster_ip` is
/// called when a Service needs an address.
pub fn apply(plural: &str, obj: &mut Value, cluster_ip: &mut dyn FnMut() -> String) {
    if plural == "secrets" {
        secret(obj);
        return;
    }
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match plural {
        "pods" => {
            let mut value = Value::Object(std::mem::take(spec));
            pod_spec(&mut value);
            *spec = value.as_object().cloned().unwrap_or_default();
            set_default(spec, "enableServiceLinks", json!(true));
            set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            set_default(spec, "priority", json!(0));
        }
        "deployments" => {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            template(spec);
        }
        "replicasets" => {
            set_default(spec, "replicas", json!(1));
            template(spec);
        }
        "jobs" => {
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            // Kubernetes defaults both to 1 only when neither is set.
            if !spec.contains_key("completions") && !spec.contains_key("parallelism") {
                spec.insert("completions".into(), json!(1));
            }
            set_default(spec, "parallelism", json!(1));
            template(spec);
        }
        "services" => {
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            let external = spec.get("type").and_then(Value::as_str) == Some("ExternalName");
            if !external {
                set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                if spec
                    .get("clusterIP")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    let ip = cluster_ip();
                    spec.insert("clusterIP".into(), json!(ip));
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
                set_default(spec, "ipFamilies", json!(["IPv4"]));
                set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                    if let Some(port) = p.get("port").cloned() {
                        set_default(p, "targetPort", port);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A Secret as kube-apiserver stores it: `stringData` is a write-only convenience merged into
/// `data` (base64, and winning over a `data` key of the same name), never stored itself; `type`
/// defaults to `Opaque`.
fn secret(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        if let Some(data) = data.as_object_mut() {
            for (k, v) in strings {
                if let Some(v) = v.as_str() {
                    data.insert(k, json!(crate::protobuf::base64(v.as_bytes())));
                }
            }
        }
    }
    set_default(map, "type", json!("Opaque"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut s = json!({"metadata": {"name": "s"}, "data": {"a": "eA==", "b": "eQ=="},
                           "stringData": {"b": "hello", "c": "1"}});
        apply("secrets", &mut s, &mut || unreachable!());
        assert_eq!(
            s,
            json!({"metadata": {"name": "s"}, "type": "Opaque",
                   "data": {"a": "eA==", "b": "aGVsbG8=", "c": "MQ=="}})
        );
    }

    #[test]
    fn deployment_template_gets_the_real_defaults() {
        let mut d = json!({"spec": {"selector": {}, "template": {"spec": {"containers": [
            {"name": "a", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "busybox"}
        ]}}}});
        apply("deployments", &mut d, &mut || unreachable!());
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "Always");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn services_get_a_cluster_ip_once_and_target_ports() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply("services", &mut s, &mut || "10.96.0.7".to_string());
        assert_eq!(s["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        apply("services", &mut s, &mut || {
            unreachable!("an existing clusterIP is kept")
        });
    }
}
