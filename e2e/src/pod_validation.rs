//! Validation of pod specs, as kube-apiserver validates every Pod and the pod template of every
//! ReplicaSet and Deployment (its `ValidatePodSpec` / `ValidatePodTemplateSpec`), with its
//! messages and its 422 `Invalid` Status carrying one cause per field. A controller that writes a
//! template the real API server refuses must meet the same refusal here.
//!
//! Checked: resource quantities (Kubernetes' quantity grammar, refused while decoding with a 400
//! as kube-apiserver does; then negative amounts and requests above limits), container names
//! (required, RFC 1123 label, unique across containers, initContainers and ephemeralContainers),
//! the image (required), ports (number range, name format, unique names, protocol), environment
//! variable names (the relaxed rule kube-apiserver v1.33 applies by default), volume names
//! (required, RFC 1123 label, unique), volume mounts (name required and naming a volume, mount
//! path required and unique), ephemeral containers (forbidden in templates and on pod create;
//! the fields they may not set). Everything else in a pod spec is accepted as written.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::ResourceDef;

/// One invalid field, as kube-apiserver's `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path, e.g. `spec.template.spec.containers[0].env[1].name`.
    pub field: String,
    /// Cause reason: `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    /// The message after the field (`Invalid value: "x": detail`).
    pub message: String,
}

impl FieldError {
    fn required(field: String, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self {
            field,
            reason: "FieldValueRequired",
            message,
        }
    }

    fn invalid(field: String, value: &Value, detail: &str) -> Self {
        Self {
            field,
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", go_value(value)),
        }
    }

    fn duplicate(field: String, value: &str) -> Self {
        Self {
            field,
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {value:?}"),
        }
    }

    fn not_found(field: String, value: &str) -> Self {
        Self {
            field,
            reason: "FieldValueNotFound",
            message: format!("Not found: {value:?}"),
        }
    }

    fn not_supported(field: String, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            field,
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    fn forbidden(field: String, detail: &str) -> Self {
        Self {
            field,
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
        }
    }
}

/// A value as Go's `%#v`-like rendering in field errors: strings quoted, numbers bare.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Where the pod spec of a built-in kind is, and how it is validated.
#[derive(Clone, Copy)]
enum Kind {
    /// A Pod: `spec`.
    Pod,
    /// A template: `spec.template.spec` (ReplicaSet, Deployment).
    Template,
}

fn kind_of(res: &ResourceDef) -> Option<Kind> {
    if res.custom {
        return None;
    }
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "pods") => Some(Kind::Pod),
        ("apps", "replicasets" | "deployments") => Some(Kind::Template),
        _ => None,
    }
}

/// The quantity grammar check kube-apiserver applies while decoding the body: a quantity that
/// does not parse makes the whole object undecodable (400), before any validation runs.
/// Returns the decoder's message.
pub fn decode_error(res: &ResourceDef, obj: &Value) -> Option<String> {
    let kind = kind_of(res)?;
    let spec = pod_spec_of(kind, obj)?;
    let lists = ["containers", "initContainers", "ephemeralContainers"];
    for list in lists {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for part in ["limits", "requests"] {
                let map = c.pointer(&format!("/resources/{part}"));
                for q in map
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(Map::values)
                {
                    if let Err(e) = quantity_text(q).and_then(|t| parse_quantity(&t)) {
                        return Some(e.to_string());
                    }
                }
            }
        }
    }
    for q in spec
        .get("overhead")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(Map::values)
    {
        if let Err(e) = quantity_text(q).and_then(|t| parse_quantity(&t)) {
            return Some(e.to_string());
        }
    }
    None
}

fn pod_spec_of(kind: Kind, obj: &Value) -> Option<&Value> {
    match kind {
        Kind::Pod => obj.get("spec"),
        Kind::Template => obj.pointer("/spec/template/spec"),
    }
}

/// Validates the pod spec of a Pod, ReplicaSet or Deployment write (`creating`: no previous
/// object). `name` is the object's name, for the Status message.
pub fn validate(res: &ResourceDef, obj: &Value, creating: bool) -> Result<(), ApiError> {
    let errors = errors(res, obj, creating);
    if errors.is_empty() {
        Ok(())
    } else {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Err(invalid(&res.kind, &res.group, name, errors))
    }
}

/// Every invalid field of the write, in kube-apiserver's order.
pub fn errors(res: &ResourceDef, obj: &Value, creating: bool) -> Vec<FieldError> {
    let Some(kind) = kind_of(res) else {
        return Vec::new();
    };
    let (prefix, spec) = match kind {
        Kind::Pod => ("spec", obj.get("spec")),
        Kind::Template => ("spec.template.spec", obj.pointer("/spec/template/spec")),
    };
    let Some(spec) = spec else {
        return Vec::new();
    };
    let mut errs = pod_spec(spec, prefix);
    let has_ephemeral = spec
        .get("ephemeralContainers")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    match kind {
        Kind::Pod if creating && has_ephemeral => errs.push(FieldError::forbidden(
            "spec.ephemeralContainers".into(),
            "cannot be set on create",
        )),
        Kind::Template if has_ephemeral => errs.push(FieldError::forbidden(
            format!("{prefix}.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        )),
        _ => {}
    }
    errs
}

/// The 422 kube-apiserver answers with: `<Kind>.<group> "<name>" is invalid: ...`, one cause per
/// field.
pub fn invalid(kind: &str, group: &str, name: &str, errors: Vec<FieldError>) -> ApiError {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let summary: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    let message = if summary.len() == 1 {
        format!("{qualified} {name:?} is invalid: {}", summary[0])
    } else {
        format!("{qualified} {name:?} is invalid: [{}]", summary.join(", "))
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
        .collect();
    ApiError::new(422, "Invalid", message)
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `ValidatePodSpec`, the parts listed in the module's documentation.
fn pod_spec(spec: &Value, prefix: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = volumes(spec, prefix, &mut errs);
    let containers = list(spec, "containers");
    let path = format!("{prefix}.containers");
    if containers.is_empty() {
        errs.push(FieldError::required(path.clone(), ""));
    }
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        let at = format!("{path}[{i}]");
        container(c, &at, &volumes, &mut errs);
        let name = str_of(c, "name");
        if !names.insert(name) {
            errs.push(FieldError::duplicate(format!("{at}.name"), name));
        }
    }
    let path = format!("{prefix}.initContainers");
    for (i, c) in list(spec, "initContainers").iter().enumerate() {
        let at = format!("{path}[{i}]");
        container(c, &at, &volumes, &mut errs);
        let name = str_of(c, "name");
        if names.contains(name) {
            errs.push(FieldError::duplicate(format!("{at}.name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
    }
    let path = format!("{prefix}.ephemeralContainers");
    for (i, c) in list(spec, "ephemeralContainers").iter().enumerate() {
        let at = format!("{path}[{i}]");
        container(c, &at, &volumes, &mut errs);
        let name = str_of(c, "name");
        if !names.insert(name) {
            errs.push(FieldError::duplicate(format!("{at}.name"), name));
        }
        // Ephemeral containers must not be relied upon for the pod's service.
        for field in [
            "ports",
            "resources",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
        ] {
            if c.get(field).is_some_and(is_set) {
                errs.push(FieldError::forbidden(
                    format!("{at}.{field}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
    errs
}

/// A field is set when it is not Go's zero value: absent, null, empty list or object.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => o.values().any(is_set),
        _ => true,
    }
}

/// Volume names (required, RFC 1123 label, unique); returns the names declared.
fn volumes(spec: &Value, prefix: &str, errs: &mut Vec<FieldError>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in list(spec, "volumes").iter().enumerate() {
        let at = format!("{prefix}.volumes[{i}].name");
        let name = str_of(v, "name");
        if name.is_empty() {
            errs.push(FieldError::required(at.clone(), ""));
        } else {
            errs.extend(dns1123_label(name, &at));
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(at, name));
        }
    }
    names
}

/// `validateContainerCommon`: name, image, ports, env, volume mounts, resources.
fn container(c: &Value, at: &str, volumes: &BTreeSet<String>, errs: &mut Vec<FieldError>) {
    let name = str_of(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(format!("{at}.name"), ""));
    } else {
        errs.extend(dns1123_label(name, &format!("{at}.name")));
    }
    if str_of(c, "image").is_empty() {
        errs.push(FieldError::required(format!("{at}.image"), ""));
    }
    ports(list(c, "ports"), &format!("{at}.ports"), errs);
    for (i, e) in list(c, "env").iter().enumerate() {
        let field = format!("{at}.env[{i}].name");
        let name = str_of(e, "name");
        if name.is_empty() {
            errs.push(FieldError::required(field, ""));
        } else if !relaxed_env_var_name(name) {
            errs.push(FieldError::invalid(
                field,
                &json!(name),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (i, m) in list(c, "volumeMounts").iter().enumerate() {
        let here = format!("{at}.volumeMounts[{i}]");
        let name = str_of(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{here}.name"), ""));
        }
        if !volumes.contains(name) {
            errs.push(FieldError::not_found(format!("{here}.name"), name));
        }
        let path = str_of(m, "mountPath");
        if path.is_empty() {
            errs.push(FieldError::required(format!("{here}.mountPath"), ""));
        }
        if !mount_paths.insert(path) {
            errs.push(FieldError::invalid(
                format!("{here}.mountPath"),
                &json!(path),
                "must be unique",
            ));
        }
    }
    resources(c.get("resources"), &format!("{at}.resources"), errs);
}

/// `validateContainerPorts`.
fn ports(ports: &[Value], at: &str, errs: &mut Vec<FieldError>) {
    let mut names = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let name = str_of(p, "name");
        if !name.is_empty() {
            let msgs = port_name_errors(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(format!("{here}.name"), &json!(name), m));
                }
            } else if !names.insert(name) {
                errs.push(FieldError::duplicate(format!("{here}.name"), name));
            }
        }
        let port = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
        if port == 0 {
            errs.push(FieldError::required(format!("{here}.containerPort"), ""));
        } else if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid(
                format!("{here}.containerPort"),
                &json!(port),
                PORT_RANGE,
            ));
        }
        let host = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
        if host != 0 && !(1..=65535).contains(&host) {
            errs.push(FieldError::invalid(
                format!("{here}.hostPort"),
                &json!(host),
                PORT_RANGE,
            ));
        }
        match str_of(p, "protocol") {
            // Defaulting fills it in on a real server; a write without defaults leaves it out.
            "" | "TCP" | "UDP" | "SCTP" => {}
            other => errs.push(FieldError::not_supported(
                format!("{here}.protocol"),
                other,
                &["SCTP", "TCP", "UDP"],
            )),
        }
    }
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// `IsValidPortName`: an IANA service name.
fn port_name_errors(name: &str) -> Vec<&'static str> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen");
    }
    errs
}

/// `IsRelaxedEnvVarName`: printable ASCII other than `=`.
fn relaxed_env_var_name(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '=')
}

/// `IsDNS1123Label`.
fn dns1123_label(value: &str, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(FieldError::invalid(
            field.to_string(),
            &json!(value),
            "must be no more than 63 characters",
        ));
    }
    let bytes = value.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-');
    if !ok {
        errs.push(FieldError::invalid(
            field.to_string(),
            &json!(value),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    }
    errs
}

/// `ValidateContainerResourceRequirements`: amounts not negative, requests not above limits.
fn resources(r: Option<&Value>, at: &str, errs: &mut Vec<FieldError>) {
    let Some(r) = r else { return };
    let parsed = |part: &str| -> Vec<(String, Quantity)> {
        r.get(part)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let q = quantity_text(v).and_then(|t| parse_quantity(&t)).ok()?;
                Some((k.clone(), q))
            })
            .collect()
    };
    let limits = parsed("limits");
    let requests = parsed("requests");
    for (name, q) in &limits {
        if q.nanos < 0 {
            errs.push(FieldError::invalid(
                format!("{at}.limits[{name}]"),
                &json!(q.canonical()),
                "must be greater than or equal to 0",
            ));
        }
    }
    for (name, q) in &requests {
        if q.nanos < 0 {
            errs.push(FieldError::invalid(
                format!("{at}.requests[{name}]"),
                &json!(q.canonical()),
                "must be greater than or equal to 0",
            ));
        }
        if let Some((_, limit)) = limits.iter().find(|(n, _)| n == name)
            && q.nanos > limit.nanos
        {
            errs.push(FieldError::invalid(
                format!("{at}.requests"),
                &json!(q.canonical()),
                &format!(
                    "must be less than or equal to {name} limit of {}",
                    limit.canonical()
                ),
            ));
        }
    }
}

/// Why a quantity does not parse: resource.Quantity's errors, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Outside the grammar.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// The number does not parse.
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    /// The suffix is not one.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// The text of a quantity: a JSON string or number (both decode in Go).
fn quantity_text(v: &Value) -> Result<String, QuantityError> {
    match v {
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(QuantityError::Format),
    }
}

/// How a quantity is written back, from the suffix it was given with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// A parsed quantity: its value in billionths (Kubernetes' finest precision) and its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// Parses `text` as Kubernetes' `ParseQuantity` does: a signed number (`1`, `1.5`, `.5`, `5.`)
/// and one suffix (`Ki`..`Ei`, `n`, `u`, `m`, `k`, `M`..`E`, or an exponent `e3`).
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Format);
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = matches!(bytes[0], b'-');
    if matches!(bytes[0], b'+' | b'-') {
        i = 1;
    }
    let start = i;
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    let number = &text[start..i];
    let suffix = &text[i..];
    // The regular expression's shape: digits and points, then suffix characters, then an
    // optional signed exponent.
    let shape_ok = !number.is_empty() && {
        let rest = suffix.trim_start_matches(|c: char| "eEinumkKMGTP".contains(c));
        let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        rest.bytes().all(|b| b.is_ascii_digit())
    };
    if !shape_ok {
        return Err(QuantityError::Format);
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
        return Err(QuantityError::Numeric);
    }
    let (format, scale) = suffix_scale(suffix)?;
    // value = number × scale, in billionths, saturating far beyond any real resource.
    let digits = format!("{whole}{frac}");
    let mantissa: i128 = digits
        .trim_start_matches('0')
        .chars()
        .take(30)
        .try_fold(0i128, |acc, d| {
            acc.checked_mul(10)?
                .checked_add(i128::from(d.to_digit(10)? as u8))
        })
        .unwrap_or(i128::MAX / 4);
    let frac_len = i32::try_from(frac.len()).unwrap_or(i32::MAX);
    let nanos = match scale {
        Scale::Decimal(exp) => scale_decimal(mantissa, exp.saturating_add(9) - frac_len),
        Scale::Binary(pow) => {
            let m = mantissa.saturating_mul(1i128 << pow);
            scale_decimal(m, 9 - frac_len)
        }
    };
    Ok(Quantity {
        nanos: if negative { -nanos } else { nanos },
        format,
    })
}

enum Scale {
    Decimal(i32),
    Binary(u32),
}

fn suffix_scale(suffix: &str) -> Result<(Format, Scale), QuantityError> {
    let decimal = |e| Ok((Format::DecimalSi, Scale::Decimal(e)));
    let binary = |p| Ok((Format::BinarySi, Scale::Binary(p)));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        s => {
            let exp = s
                .strip_prefix(['e', 'E'])
                .filter(|e| !e.is_empty())
                .and_then(|e| e.parse::<i32>().ok())
                .ok_or(QuantityError::Suffix)?;
            Ok((Format::DecimalExponent, Scale::Decimal(exp)))
        }
    }
}

/// `m × 10^exp`, rounded up (away from zero) below a billionth as Kubernetes rounds.
fn scale_decimal(m: i128, exp: i32) -> i128 {
    if exp >= 0 {
        let mut v = m;
        for _ in 0..exp.min(40) {
            v = v.saturating_mul(10);
        }
        v
    } else {
        let div = 10i128
            .checked_pow(exp.unsigned_abs().min(38))
            .unwrap_or(i128::MAX);
        let q = m / div;
        if m % div == 0 { q } else { q + 1 }
    }
}

impl Quantity {
    /// The canonical text, as `Quantity.String()` writes it: the largest suffix of the format
    /// that keeps the number whole.
    pub fn canonical(&self) -> String {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let v = self.nanos.unsigned_abs();
        if v == 0 {
            return "0".to_string();
        }
        const NANO: u128 = 1_000_000_000;
        if self.format == Format::BinarySi && v.is_multiple_of(NANO) && v / NANO >= 1024 {
            let bytes = v / NANO;
            for (pow, suffix) in [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ] {
                if bytes.is_multiple_of(1u128 << pow) {
                    return format!("{sign}{}{suffix}", bytes >> pow);
                }
            }
        }
        let (mut mantissa, mut exp) = (v, -9i32);
        while mantissa.is_multiple_of(1000) && exp < 18 {
            mantissa /= 1000;
            exp += 3;
        }
        if self.format == Format::DecimalExponent {
            return if exp == 0 {
                format!("{sign}{mantissa}")
            } else {
                format!("{sign}{mantissa}e{exp}")
            };
        }
        let suffix = match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        };
        format!("{sign}{mantissa}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_parses_them() {
        for (text, canonical) in [
            ("500m", "500m"),
            ("0.5", "500m"),
            (".5", "500m"),
            ("5.", "5"),
            ("1", "1"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("128Mi", "128Mi"),
            ("1Gi", "1Gi"),
            ("1024", "1024"),
            ("1e3", "1e3"),
            ("100u", "100u"),
            ("-1", "-1"),
            ("+2k", "2k"),
        ] {
            let q = parse_quantity(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(q.canonical(), canonical, "{text}");
        }
    }

    #[test]
    fn non_quantities_are_refused_with_the_decoders_words() {
        assert_eq!(parse_quantity("invalid"), Err(QuantityError::Format));
        assert_eq!(parse_quantity(""), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1.2.3"), Err(QuantityError::Numeric));
        assert_eq!(parse_quantity("5kk"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("5Mii"), Err(QuantityError::Suffix));
    }

    #[test]
    fn env_names_follow_the_relaxed_rule() {
        assert!(relaxed_env_var_name("1BAD is fine"));
        assert!(!relaxed_env_var_name("A=B"));
        assert!(!relaxed_env_var_name("caf\u{e9}"));
    }
}
