//! Just enough of Kubernetes' protobuf encoding to accept what `kubectl create namespace`,
//! `kubectl create configmap` and `kubectl create secret generic` send (the typed clientset
//! defaults to protobuf). Other kinds, and fields beyond names, labels, annotations, finalizers
//! and data, are refused so nothing is dropped silently.

use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone, PartialEq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            1 => {
                pos += 8;
                Field::Fixed
            }
            5 => {
                pos += 4;
                Field::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn string(field: &Field<'_>) -> Result<String, String> {
    match field {
        Field::Bytes(b) => String::from_utf8(b.to_vec()).map_err(|e| e.to_string()),
        _ => Err("expected a string".into()),
    }
}

pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `map<string, string|bytes>` entry.
fn map_entry(field: &Field<'_>, bytes_value: bool) -> Result<(String, Value), String> {
    let Field::Bytes(b) = field else {
        return Err("expected a map entry".into());
    };
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, f) in fields(b)? {
        match n {
            1 => key = string(&f)?,
            2 if bytes_value => {
                let Field::Bytes(raw) = f else {
                    return Err("expected bytes".into());
                };
                value = json!(base64(raw));
            }
            2 => value = json!(string(&f)?),
            _ => {}
        }
    }
    Ok((key, value))
}

fn object_meta(buf: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(buf)? {
        match n {
            1 => {
                meta.insert("name".into(), json!(string(&f)?));
            }
            2 => {
                meta.insert("generateName".into(), json!(string(&f)?));
            }
            3 => {
                meta.insert("namespace".into(), json!(string(&f)?));
            }
            6 => {
                meta.insert("resourceVersion".into(), json!(string(&f)?));
            }
            11 => {
                let (k, v) = map_entry(&f, false)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = map_entry(&f, false)?;
                annotations.insert(k, v);
            }
            14 => finalizers.push(json!(string(&f)?)),
            // Server-set fields a client may echo back; ignored as the server would reset them.
            4 | 5 | 7 | 8 | 9 | 10 | 17 => {}
            other => {
                return Err(format!(
                    "metadata field {other} is not supported by the test cluster"
                ));
            }
        }
    }
    for (key, value) in [("labels", labels), ("annotations", annotations)] {
        if !value.is_empty() {
            meta.insert(key.into(), Value::Object(value));
        }
    }
    if !finalizers.is_empty() {
        meta.insert("finalizers".into(), Value::Array(finalizers));
    }
    Ok(Value::Object(meta))
}

/// Decodes a protobuf-encoded Namespace, ConfigMap or Secret into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("missing the k8s protobuf magic")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    for (n, f) in fields(envelope)? {
        match (n, &f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    match tn {
                        1 => api_version = string(&tf)?,
                        2 => kind = string(&tf)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = Some(*b),
            _ => {}
        }
    }
    let raw = raw.ok_or("protobuf envelope without an object")?;
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n) {
            (_, 1) => {
                let Field::Bytes(b) = f else {
                    return Err("bad metadata".into());
                };
                obj["metadata"] = object_meta(b)?;
            }
            ("ConfigMap", 2) | ("Secret", 4) => {
                let (k, v) = map_entry(&f, false)?;
                let key = if kind == "Secret" {
                    "stringData"
                } else {
                    "data"
                };
                obj[key][k] = v;
            }
            ("ConfigMap", 3) | ("Secret", 2) => {
                let (k, v) = map_entry(&f, true)?;
                let key = if kind == "Secret" {
                    "data"
                } else {
                    "binaryData"
                };
                obj[key][k] = v;
            }
            ("Secret", 3) => obj["type"] = json!(string(&f)?),
            ("ConfigMap", 4) | ("Secret", 5) => {
                let Field::Varint(v) = f else {
                    return Err("bad bool".into());
                };
                obj["immutable"] = json!(v != 0);
            }
            ("Namespace", 2) => {
                let Field::Bytes(b) = f else {
                    return Err("bad namespace spec".into());
                };
                let finalizers: Result<Vec<String>, String> = fields(b)?
                    .iter()
                    .filter(|(n, _)| *n == 1)
                    .map(|(_, f)| string(f))
                    .collect();
                obj["spec"] = json!({"finalizers": finalizers?});
            }
            ("Namespace", 3) => {}
            (kind, n) => {
                return Err(format!(
                    "{kind} field {n} is not supported in protobuf by the test cluster"
                ));
            }
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_configmap_as_kubectl_sends_it() {
        let entry = [field(1, b"greeting"), field(2, b"hello")].concat();
        let labels = [field(1, b"app"), field(2, b"web")].concat();
        let meta = [field(1, b"demo"), field(11, &labels)].concat();
        let raw = [field(1, &meta), field(2, &entry)].concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "demo", "labels": {"app": "web"}}, "data": {"greeting": "hello"}})
        );
    }

    #[test]
    fn base64_pads_like_the_standard() {
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn other_kinds_are_refused() {
        let raw = field(2, b"x");
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert!(decode(&body).is_err());
    }
}
