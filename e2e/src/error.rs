//! Errors: the `Status` objects the API server answers with, and the errors of the Rust API.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// A failed API request, rendered as a `meta.k8s.io/v1` `Status` exactly as kube-apiserver does, so
/// kube maps it to `kube::Error::Api` and helpers such as `is_not_found()` work.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `<plural>.<group> "<name>" not found`, the wording of kube-apiserver.
    pub fn not_found(qualified: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found")).with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}),
        )
    }

    pub fn already_exists(qualified: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        )
        .with_details(
            json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}),
        )
    }

    pub fn conflict(qualified: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(json!({"name": name, "kind": kind_of(qualified), "group": group_of(qualified)}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// A 422 with one cause per invalid field, as validation failures are reported.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let summary: Vec<String> = causes
            .iter()
            .map(|(field, msg)| format!("{field}: {msg}"))
            .collect();
        let message = if summary.len() == 1 {
            format!("{qualified} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!(
                "{qualified} \"{name}\" is invalid: [{}]",
                summary.join(", ")
            )
        };
        let causes: Vec<Value> = causes
            .into_iter()
            .map(|(field, msg)| json!({"reason": "FieldValueInvalid", "message": msg, "field": field}))
            .collect();
        Self::new(422, "Invalid", message)
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted} (got {content_type:?})"
            ),
        )
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The reason kube-apiserver pairs with an HTTP code, for injected faults.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        Self::new(code, reason, message)
    }

    /// A create or update body with unknown (or duplicate) fields under `fieldValidation=Strict`:
    /// the decoder's error, as `runtime.NewStrictDecodingError` words it.
    pub fn strict_decoding(kind: &str, version: &str, errors: &[String]) -> Self {
        Self::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            errors.join(", ")
        ))
    }

    /// A patch whose result has unknown fields under `fieldValidation=Strict`: the real server
    /// reports a 422 on the field `patch`, quoting the patched object (JSON and merge patches) or
    /// the patch itself (strategic merge patches, printed as a Go map).
    pub fn strict_patch(value: &str, errors: &[String]) -> Self {
        let detail = format!(
            "Invalid value: {}: strict decoding error: {}",
            go_quote(value),
            errors.join(", ")
        );
        Self::new(422, "Invalid", format!(" \"\" is invalid: patch: {detail}")).with_details(
            json!({"causes": [{"reason": "FieldValueInvalid", "message": detail, "field": "patch"}]}),
        )
    }

    /// Server-side apply of a configuration with fields its schema does not declare. The real
    /// server (v1.32) answers this with a 500 and no reason, whatever the `fieldValidation`.
    pub fn undeclared_in_apply(
        namespace: &str,
        name: &str,
        group: &str,
        version: &str,
        kind: &str,
        paths: &[String],
    ) -> Self {
        let errors: Vec<String> = paths
            .iter()
            .map(|p| format!("{p}: field not declared in schema"))
            .collect();
        let errors = if errors.len() == 1 {
            errors.join("")
        } else {
            format!("errors:\n  {}", errors.join("\n  "))
        };
        Self::new(
            500,
            "",
            format!(
                "failed to create typed patch object ({namespace}/{name}; {group}/{version}, Kind={kind}): {errors}"
            ),
        )
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty()
            && let Some(map) = status.as_object_mut()
        {
            // Errors that are not API statuses reach clients without a reason.
            map.remove("reason");
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// A string quoted as Go's `%q` does, as the real server quotes values in its messages.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON value printed as Go's `%v` prints the decoded `map[string]interface{}`
/// (`map[spec:map[replicas:3]]`), as strategic merge patch errors show the patch.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_value).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_value(&map[*k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn kind_of(qualified: &str) -> &str {
    qualified.split('.').next().unwrap_or(qualified)
}

fn group_of(qualified: &str) -> &str {
    qualified.split_once('.').map(|(_, g)| g).unwrap_or("")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (code, self.to_status().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Errors of the Rust API of the test cluster (starting it, loading CRDs, building clients).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("failed to bind the api server to a loopback port")]
    Bind(#[source] std::io::Error),
    #[error("failed to read crd file {path}")]
    ReadCrd {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse crd file {path}")]
    ParseCrd {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("the api server rejected the crd from {path}: {message}")]
    RejectedCrd { path: String, message: String },
    #[error("failed to build a kube client for the test cluster")]
    Client(#[source] kube::Error),
    #[error("failed to write the kubeconfig to {path}")]
    WriteKubeconfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("request to the api server was rejected: {0}")]
    Api(String),
}
