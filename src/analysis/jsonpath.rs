//! The subset of Kubernetes JSONPath (the syntax of `kubectl -o jsonpath`) that web metrics use
//! to pick their value out of a JSON answer: `{$.data.ok}`, `{.items[0].value}`,
//! `{$.results[*].ok}`, `{$['odd key']}`, `{$..ok}`, `{$.items[?(@.name == "a")].value}`.
//!
//! As in Argo Rollouts, the value a metric sees is the first match; a key that is not there is
//! an error naming it, so a missing field is never taken for a value.

use std::fmt;

use serde_json::Value;

/// A JSONPath expression that parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// `.name` or `['name']`.
    Child(String),
    /// `..name`: every descendant called `name`.
    Descendant(String),
    /// `[*]` or `.*`.
    Wildcard,
    /// `[n]`; negative counts from the end.
    Index(i64),
    /// `[a:b]`.
    Slice(Option<i64>, Option<i64>),
    /// `[?(@.path OP literal)]` or `[?(@.path)]`.
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Vec<Segment>,
    op: Option<(Op, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Why an expression does not parse, or why it found nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPathError {
    /// The expression is not valid.
    #[error("{expression:?} is not a valid JSONPath: {reason}")]
    Syntax {
        /// The expression as written.
        expression: String,
        /// What is wrong.
        reason: String,
    },
    /// A key or index that is not in the document.
    #[error("{0} is not found")]
    NotFound(String),
    /// The expression matched nothing (an empty list, a filter nobody passes).
    #[error("{0} matched no value")]
    NoValue(String),
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl JsonPath {
    /// The default of a web metric: the whole document.
    pub fn whole_document() -> Self {
        JsonPath {
            source: "{$}".to_string(),
            segments: Vec::new(),
        }
    }

    /// Parses `{EXPR}`: one expression in braces, as Kubernetes writes them (`{$.a.b}`,
    /// `{.a.b}`).
    pub fn parse(source: &str) -> Result<Self, JsonPathError> {
        let err = |reason: &str| JsonPathError::Syntax {
            expression: source.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = source.trim();
        let inner = trimmed
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| err("it must be one expression in braces, such as {$.data.ok}"))?
            .trim();
        if inner.contains('{') || inner.contains('}') {
            return Err(err("only one expression in braces is supported"));
        }
        let mut p = Parser {
            chars: inner.chars().collect(),
            pos: 0,
        };
        let segments = p.path(false).map_err(|r| err(&r))?;
        if p.pos != p.chars.len() {
            return Err(err(&format!(
                "unexpected {:?} at position {}",
                p.chars[p.pos],
                p.pos + 1
            )));
        }
        Ok(JsonPath {
            source: trimmed.to_string(),
            segments,
        })
    }

    /// The first value the expression selects in `doc`.
    pub fn first(&self, doc: &Value) -> Result<Value, JsonPathError> {
        let found = select(&self.segments, doc, true)?;
        found
            .into_iter()
            .next()
            .cloned()
            .ok_or_else(|| JsonPathError::NoValue(self.source.clone()))
    }
}

/// Every value `segments` selects from `doc`. `strict`: a missing key or index is an error (as
/// in Kubernetes' JSONPath); inside filters and wildcards it just selects nothing.
fn select<'a>(
    segments: &[Segment],
    doc: &'a Value,
    strict: bool,
) -> Result<Vec<&'a Value>, JsonPathError> {
    let mut current = vec![doc];
    let mut strict = strict;
    for seg in segments {
        let mut next = Vec::new();
        for v in current {
            match seg {
                Segment::Child(name) => match v.get(name.as_str()) {
                    Some(x) => next.push(x),
                    None if strict => return Err(JsonPathError::NotFound(name.clone())),
                    None => {}
                },
                Segment::Descendant(name) => descendants(v, name, &mut next),
                Segment::Wildcard => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(o) => next.extend(o.values()),
                    _ => {}
                },
                Segment::Index(i) => {
                    let Value::Array(a) = v else {
                        if strict {
                            return Err(JsonPathError::NotFound(format!("[{i}]")));
                        }
                        continue;
                    };
                    let idx = if *i < 0 {
                        i64::try_from(a.len()).unwrap_or(i64::MAX) + i
                    } else {
                        *i
                    };
                    match usize::try_from(idx).ok().and_then(|k| a.get(k)) {
                        Some(x) => next.push(x),
                        None if strict => {
                            return Err(JsonPathError::NotFound(format!(
                                "array index [{i}] (length {})",
                                a.len()
                            )));
                        }
                        None => {}
                    }
                }
                Segment::Slice(from, to) => {
                    if let Value::Array(a) = v {
                        let len = i64::try_from(a.len()).unwrap_or(i64::MAX);
                        let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
                        let s = from.map_or(0, norm);
                        let e = to.map_or(len, norm);
                        if s < e {
                            let (s, e) = (
                                usize::try_from(s).unwrap_or(0),
                                usize::try_from(e).unwrap_or(0),
                            );
                            next.extend(a[s..e].iter());
                        }
                    }
                }
                Segment::Filter(f) => {
                    let items: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        Value::Object(o) => o.values().collect(),
                        _ => Vec::new(),
                    };
                    for item in items {
                        if f.passes(item) {
                            next.push(item);
                        }
                    }
                }
            }
        }
        if matches!(
            seg,
            Segment::Wildcard | Segment::Descendant(_) | Segment::Slice(..) | Segment::Filter(_)
        ) {
            // After a fan-out, an element without the key is skipped, as kubectl does.
            strict = false;
        }
        current = next;
    }
    Ok(current)
}

fn descendants<'a>(v: &'a Value, name: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(o) => {
            if let Some(x) = o.get(name) {
                out.push(x);
            }
            for child in o.values() {
                descendants(child, name, out);
            }
        }
        Value::Array(a) => {
            for child in a {
                descendants(child, name, out);
            }
        }
        _ => {}
    }
}

impl Filter {
    fn passes(&self, item: &Value) -> bool {
        let Ok(found) = select(&self.path, item, false) else {
            return false;
        };
        let Some(lhs) = found.first() else {
            return false;
        };
        let Some((op, rhs)) = &self.op else {
            return !lhs.is_null() && **lhs != Value::Bool(false);
        };
        let ordering = match (lhs, rhs) {
            (Value::Number(a), Value::Number(b)) => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b)),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (a, b) if *a == b => Some(std::cmp::Ordering::Equal),
            _ => None,
        };
        use std::cmp::Ordering::*;
        match (op, ordering) {
            (Op::Eq, o) => o == Some(Equal),
            (Op::Ne, o) => o != Some(Equal),
            (Op::Lt, o) => o == Some(Less),
            (Op::Le, o) => matches!(o, Some(Less | Equal)),
            (Op::Gt, o) => o == Some(Greater),
            (Op::Ge, o) => matches!(o, Some(Greater | Equal)),
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// A path: `$` or `@` (inside a filter) first, then segments.
    fn path(&mut self, in_filter: bool) -> Result<Vec<Segment>, String> {
        let root = if in_filter { '@' } else { '$' };
        if in_filter && !self.eat(root) {
            return Err("a filter must start with @".to_string());
        }
        if !in_filter {
            self.eat(root);
        }
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    if self.eat('.') {
                        let name = self.name()?;
                        segments.push(Segment::Descendant(name));
                    } else if self.eat('*') {
                        segments.push(Segment::Wildcard);
                    } else if self.peek().is_none() && segments.is_empty() {
                        // `{.}`: the document itself.
                    } else {
                        segments.push(Segment::Child(self.name()?));
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    segments.push(self.bracket()?);
                }
                _ => return Ok(segments),
            }
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '/'))
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(match self.peek() {
                Some(c) => format!(
                    "expected a key name at position {}, found {c:?}",
                    self.pos + 1
                ),
                None => "expected a key name at the end".to_string(),
            });
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    fn quoted(&mut self) -> Result<Option<String>, String> {
        let Some(q) = self.peek().filter(|c| matches!(c, '\'' | '"')) else {
            return Ok(None);
        };
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|c| c != q) {
            self.pos += 1;
        }
        if !self.eat(q) {
            return Err("unterminated quoted string".to_string());
        }
        Ok(Some(self.chars[start..self.pos - 1].iter().collect()))
    }

    fn int(&mut self) -> Result<Option<i64>, String> {
        let start = self.pos;
        self.eat('-');
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| format!("{text:?} is not an index"))
    }

    fn close(&mut self) -> Result<(), String> {
        self.skip_spaces();
        if self.eat(']') {
            Ok(())
        } else {
            Err(format!("expected ] at position {}", self.pos + 1))
        }
    }

    fn bracket(&mut self) -> Result<Segment, String> {
        self.skip_spaces();
        if self.eat('*') {
            self.close()?;
            return Ok(Segment::Wildcard);
        }
        if let Some(key) = self.quoted()? {
            self.close()?;
            return Ok(Segment::Child(key));
        }
        if self.eat('?') {
            let f = self.filter()?;
            self.close()?;
            return Ok(Segment::Filter(f));
        }
        let from = self.int()?;
        self.skip_spaces();
        if self.eat(':') {
            self.skip_spaces();
            let to = self.int()?;
            self.close()?;
            return Ok(Segment::Slice(from, to));
        }
        let Some(i) = from else {
            return Err(format!(
                "expected an index, a quoted key, * or a filter at position {}",
                self.pos + 1
            ));
        };
        self.close()?;
        Ok(Segment::Index(i))
    }

    fn filter(&mut self) -> Result<Filter, String> {
        self.skip_spaces();
        if !self.eat('(') {
            return Err("a filter is written [?(@.key == value)]".to_string());
        }
        self.skip_spaces();
        let path = self.path(true)?;
        self.skip_spaces();
        let op = if self.eat(')') {
            None
        } else {
            let op = if self.eat('=') {
                if !self.eat('=') {
                    return Err("use == to compare".to_string());
                }
                Op::Eq
            } else if self.eat('!') {
                if !self.eat('=') {
                    return Err("use != to compare".to_string());
                }
                Op::Ne
            } else if self.eat('<') {
                if self.eat('=') { Op::Le } else { Op::Lt }
            } else if self.eat('>') {
                if self.eat('=') { Op::Ge } else { Op::Gt }
            } else {
                return Err(format!(
                    "expected a comparison or ) at position {}",
                    self.pos + 1
                ));
            };
            self.skip_spaces();
            let literal = self.literal()?;
            self.skip_spaces();
            if !self.eat(')') {
                return Err(format!("expected ) at position {}", self.pos + 1));
            }
            Some((op, literal))
        };
        Ok(Filter { path, op })
    }

    fn literal(&mut self) -> Result<Value, String> {
        if let Some(s) = self.quoted()? {
            return Ok(Value::String(s));
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        {
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        match text.as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" => Ok(Value::Null),
            _ => serde_json::from_str::<serde_json::Number>(&text)
                .map(Value::Number)
                .map_err(|_| format!("{text:?} is not a number, a quoted string or a boolean")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn first(path: &str, doc: Value) -> Result<Value, JsonPathError> {
        JsonPath::parse(path).unwrap().first(&doc)
    }

    #[test]
    fn selects_like_kubernetes_jsonpath() {
        let doc = json!({"data": {"ok": true, "successPercent": 0.95, "odd key": 1},
            "items": [{"name": "a", "v": 1}, {"name": "b", "v": 2}, {"name": "c"}]});
        assert_eq!(first("{$.data.ok}", doc.clone()), Ok(json!(true)));
        assert_eq!(
            first("{.data.successPercent}", doc.clone()),
            Ok(json!(0.95))
        );
        assert_eq!(first("{$}", doc.clone()), Ok(doc.clone()));
        assert_eq!(first("{$['data']['odd key']}", doc.clone()), Ok(json!(1)));
        assert_eq!(first("{$.items[1].v}", doc.clone()), Ok(json!(2)));
        assert_eq!(first("{$.items[-1].name}", doc.clone()), Ok(json!("c")));
        assert_eq!(first("{$.items[*].v}", doc.clone()), Ok(json!(1)));
        assert_eq!(first("{$.items[1:].name}", doc.clone()), Ok(json!("b")));
        assert_eq!(first("{$..ok}", doc.clone()), Ok(json!(true)));
        assert_eq!(
            first("{$.items[?(@.name == 'b')].v}", doc.clone()),
            Ok(json!(2))
        );
        assert_eq!(
            first("{$.items[?(@.v > 1)].name}", doc.clone()),
            Ok(json!("b"))
        );
        assert_eq!(first("{ $.data.ok }", doc), Ok(json!(true)));
    }

    #[test]
    fn missing_keys_and_empty_matches_are_errors() {
        let doc = json!({"data": {"ok": true}, "items": []});
        assert_eq!(
            first("{$.data.missing}", doc.clone()),
            Err(JsonPathError::NotFound("missing".into()))
        );
        assert!(matches!(
            first("{$.items[0]}", doc.clone()),
            Err(JsonPathError::NotFound(_))
        ));
        assert_eq!(
            first("{$.items[*]}", doc),
            Err(JsonPathError::NoValue("{$.items[*]}".into()))
        );
    }

    #[test]
    fn bad_syntax_is_reported() {
        for bad in [
            "$.data.ok",
            "{$.data.}",
            "{$.items[}",
            "{$.items[?(@.a = 1)]}",
            "{$.a}{$.b}",
            "{$.a)}",
        ] {
            assert!(
                matches!(JsonPath::parse(bad), Err(JsonPathError::Syntax { .. })),
                "{bad}"
            );
        }
    }
}
