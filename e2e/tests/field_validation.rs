//! `fieldValidation` (Strict / Warn / Ignore) on every kind of write, for a custom resource and a
//! built-in kind, with kube-apiserver's status codes, messages and `Warning` headers. Requests are
//! plain HTTP so that the test sees the headers as a client receives them.

use serde_json::{Value, json};
use sluice_e2e::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
async fn request(
    cluster: &TestCluster,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> Reply {
    let url = cluster.config().cluster_url;
    let authority = url
        .authority()
        .expect("the cluster url has a host")
        .as_str();
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let payload = body.to_string();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nUser-Agent: field-validation-test\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(payload.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an http response");
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let warnings = lines
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.eq_ignore_ascii_case("warning"))
        .map(|(_, v)| v.to_string())
        .collect();
    // Bodies come whole (content-length) or chunked; a chunked body is one JSON chunk here.
    let json_start = body.find('{').unwrap_or(0);
    let json_end = body.rfind('}').map_or(body.len(), |i| i + 1);
    let body = serde_json::from_str(&body[json_start..json_end]).unwrap_or(Value::Null);
    Reply {
        code,
        warnings,
        body,
    }
}

const WIDGETS: &str = "/apis/e2e.sluice.dev/v1/namespaces/default/widgets";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn widget(name: &str) -> Value {
    json!({"apiVersion": "e2e.sluice.dev/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": {"size": "small", "sizee": "large"}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx", "imagee": "typo"}]}}}})
}

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start().await.unwrap();
    cluster.install_crd(sluice_e2e::example_crd()).unwrap();
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_create_is_refused_naming_the_full_path_of_the_unknown_field() {
    let cluster = cluster().await;
    let cr = request(
        &cluster,
        "POST",
        &format!("{WIDGETS}?fieldValidation=Strict"),
        "application/json",
        &widget("a"),
    )
    .await;
    assert_eq!(cr.code, 400, "{}", cr.body);
    assert_eq!(cr.body["reason"], "BadRequest");
    assert_eq!(
        cr.body["message"],
        "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.sizee\""
    );
    let builtin = request(
        &cluster,
        "POST",
        &format!("{DEPLOYMENTS}?fieldValidation=Strict"),
        "application/json",
        &deployment("web"),
    )
    .await;
    assert_eq!(builtin.code, 400, "{}", builtin.body);
    assert_eq!(
        builtin.body["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.template.spec.containers[0].imagee\""
    );
    assert!(
        cluster
            .object("e2e.sluice.dev", "widgets", "default", "a")
            .is_none()
    );
    assert!(
        cluster
            .object("apps", "deployments", "default", "web")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_is_the_default_and_stores_the_object_without_the_field() {
    let cluster = cluster().await;
    for (query, name) in [("?fieldValidation=Warn", "warned"), ("", "defaulted")] {
        let cr = request(
            &cluster,
            "POST",
            &format!("{WIDGETS}{query}"),
            "application/json",
            &widget(name),
        )
        .await;
        assert_eq!(cr.code, 201, "{}", cr.body);
        assert_eq!(cr.warnings, vec![r#"299 - "unknown field \"spec.sizee\"""#]);
        let stored = cluster
            .object("e2e.sluice.dev", "widgets", "default", name)
            .unwrap();
        assert_eq!(stored["spec"], json!({"size": "small", "replicas": 1}));

        let builtin = request(
            &cluster,
            "POST",
            &format!("{DEPLOYMENTS}{query}"),
            "application/json",
            &deployment(name),
        )
        .await;
        assert_eq!(builtin.code, 201, "{}", builtin.body);
        assert_eq!(
            builtin.warnings,
            vec![r#"299 - "unknown field \"spec.template.spec.containers[0].imagee\"""#]
        );
        let stored = cluster
            .object("apps", "deployments", "default", name)
            .unwrap();
        let container = &stored["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "nginx");
        assert!(container.get("imagee").is_none(), "{container}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_drops_unknown_fields_silently() {
    let cluster = cluster().await;
    let cr = request(
        &cluster,
        "POST",
        &format!("{WIDGETS}?fieldValidation=Ignore"),
        "application/json",
        &widget("quiet"),
    )
    .await;
    assert_eq!(cr.code, 201, "{}", cr.body);
    assert!(cr.warnings.is_empty(), "{:?}", cr.warnings);
    assert!(cr.body["spec"].get("sizee").is_none());
    let builtin = request(
        &cluster,
        "POST",
        &format!("{DEPLOYMENTS}?fieldValidation=Ignore"),
        "application/json",
        &deployment("quiet"),
    )
    .await;
    assert_eq!(builtin.code, 201, "{}", builtin.body);
    assert!(builtin.warnings.is_empty(), "{:?}", builtin.warnings);
    assert!(
        builtin.body["spec"]["template"]["spec"]["containers"][0]
            .get("imagee")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_metadata_fields_of_custom_resources_are_reported_too() {
    let cluster = cluster().await;
    let mut body = widget("meta");
    body["spec"] = json!({"size": "small"});
    body["metadata"]["labelz"] = json!({"a": "b"});
    let reply = request(&cluster, "POST", WIDGETS, "application/json", &body).await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(
        reply.warnings,
        vec![r#"299 - "unknown field \"metadata.labelz\"""#]
    );
    assert!(reply.body["metadata"].get("labelz").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_and_patches_are_validated_on_the_resulting_object() {
    let cluster = cluster().await;
    let mut clean = deployment("web");
    clean["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("imagee");
    let created = request(&cluster, "POST", DEPLOYMENTS, "application/json", &clean).await;
    assert_eq!(created.code, 201, "{}", created.body);
    let item = format!("{DEPLOYMENTS}/web");

    // PUT: worded like a create.
    let mut put = created.body.clone();
    // Without a resourceVersion: the simulated controller writes the status meanwhile.
    put["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    put["spec"]["paused"] = json!(true);
    put["spec"]["pausd"] = json!(true);
    let strict = request(
        &cluster,
        "PUT",
        &format!("{item}?fieldValidation=Strict"),
        "application/json",
        &put,
    )
    .await;
    assert_eq!(strict.code, 400, "{}", strict.body);
    assert_eq!(
        strict.body["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.pausd\""
    );
    let warned = request(&cluster, "PUT", &item, "application/json", &put).await;
    assert_eq!(warned.code, 200, "{}", warned.body);
    assert_eq!(
        warned.warnings,
        vec![r#"299 - "unknown field \"spec.pausd\"""#]
    );
    assert_eq!(warned.body["spec"]["paused"], true);
    assert!(warned.body["spec"].get("pausd").is_none());

    // Merge patch: a 422 on the field `patch`, quoting the patched object.
    let patch = json!({"spec": {"minReadySecond": 5}});
    let strict = request(
        &cluster,
        "PATCH",
        &format!("{item}?fieldValidation=Strict"),
        "application/merge-patch+json",
        &patch,
    )
    .await;
    assert_eq!(strict.code, 422, "{}", strict.body);
    assert_eq!(strict.body["reason"], "Invalid");
    let cause = &strict.body["details"]["causes"][0];
    assert_eq!(cause["field"], "patch");
    let message = cause["message"].as_str().unwrap();
    assert!(message.starts_with("Invalid value: \"{"), "{message}");
    assert!(
        message.ends_with(": strict decoding error: unknown field \"spec.minReadySecond\""),
        "{message}"
    );
    assert!(
        strict.body["message"]
            .as_str()
            .unwrap()
            .starts_with(" \"\" is invalid: patch: Invalid value: ")
    );
    let warned = request(
        &cluster,
        "PATCH",
        &format!("{item}?fieldValidation=Warn"),
        "application/merge-patch+json",
        &patch,
    )
    .await;
    assert_eq!(warned.code, 200, "{}", warned.body);
    assert_eq!(
        warned.warnings,
        vec![r#"299 - "unknown field \"spec.minReadySecond\"""#]
    );
    let ignored = request(
        &cluster,
        "PATCH",
        &format!("{item}?fieldValidation=Ignore"),
        "application/merge-patch+json",
        &patch,
    )
    .await;
    assert_eq!(ignored.code, 200, "{}", ignored.body);
    assert!(ignored.warnings.is_empty());

    // Strategic merge patch: the patch is quoted as the Go map the server decoded.
    let strict = request(
        &cluster,
        "PATCH",
        &format!("{item}?fieldValidation=Strict"),
        "application/strategic-merge-patch+json",
        &json!({"spec": {"replica": 2}}),
    )
    .await;
    assert_eq!(strict.code, 422, "{}", strict.body);
    assert_eq!(
        strict.body["details"]["causes"][0]["message"],
        "Invalid value: \"map[spec:map[replica:2]]\": strict decoding error: unknown field \"spec.replica\""
    );

    // A custom resource through a JSON patch.
    let mut w = widget("w");
    w["spec"] = json!({"size": "small"});
    let created = request(&cluster, "POST", WIDGETS, "application/json", &w).await;
    assert_eq!(created.code, 201, "{}", created.body);
    let strict = request(
        &cluster,
        "PATCH",
        &format!("{WIDGETS}/w?fieldValidation=Strict"),
        "application/json-patch+json",
        &json!([{"op": "add", "path": "/spec/colour", "value": "red"}]),
    )
    .await;
    assert_eq!(strict.code, 422, "{}", strict.body);
    assert!(
        strict.body["details"]["causes"][0]["message"]
            .as_str()
            .unwrap()
            .ends_with("strict decoding error: unknown field \"spec.colour\""),
        "{}",
        strict.body
    );
    let stored = cluster
        .object("e2e.sluice.dev", "widgets", "default", "w")
        .unwrap();
    assert!(stored["spec"].get("colour").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_refuses_undeclared_fields_whatever_the_validation() {
    let cluster = cluster().await;
    for validation in ["Strict", "Warn", "Ignore"] {
        let reply = request(
            &cluster,
            "PATCH",
            &format!("{DEPLOYMENTS}/web?fieldManager=test&fieldValidation={validation}"),
            "application/apply-patch+yaml",
            &deployment("web"),
        )
        .await;
        // kube-apiserver v1.32 answers this with a 500 without a reason.
        assert_eq!(reply.code, 500, "{}", reply.body);
        assert!(reply.body.get("reason").is_none(), "{}", reply.body);
        assert_eq!(
            reply.body["message"],
            "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.template.spec.containers[name=\"web\"].imagee: field not declared in schema"
        );
        let cr = request(
            &cluster,
            "PATCH",
            &format!("{WIDGETS}/a?fieldManager=test&fieldValidation={validation}"),
            "application/apply-patch+yaml",
            &widget("a"),
        )
        .await;
        assert_eq!(cr.code, 500, "{}", cr.body);
        assert_eq!(
            cr.body["message"],
            "failed to create typed patch object (default/a; e2e.sluice.dev/v1, Kind=Widget): .spec.sizee: field not declared in schema"
        );
    }
    assert!(
        cluster
            .object("apps", "deployments", "default", "web")
            .is_none()
    );
    // Fields under x-kubernetes-preserve-unknown-fields are declared by that marker.
    let mut open = widget("open");
    open["spec"] = json!({"size": "small", "extra": {"anything": {"goes": 1}}});
    let reply = request(
        &cluster,
        "PATCH",
        &format!("{WIDGETS}/open?fieldManager=test&fieldValidation=Strict"),
        "application/apply-patch+yaml",
        &open,
    )
    .await;
    assert_eq!(reply.code, 201, "{}", reply.body);
    assert_eq!(reply.body["spec"]["extra"]["anything"]["goes"], 1);
}
