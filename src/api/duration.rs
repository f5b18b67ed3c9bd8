//! Durations as Argo Rollouts writes them: integer seconds or Go duration strings.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pause duration: an integer number of seconds (`30`), a numeric string (`"30"`), or a Go
/// duration string (`"30s"`, `"5m"`, `"1h30m"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrDuration {
    /// Whole seconds.
    Seconds(i64),
    /// A numeric string (seconds) or a Go duration string.
    Text(String),
}

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration: use whole seconds (30) or a Go duration (30s, 5m, 1h30m)")]
    Unparseable(String),
    #[error("{0:?} is negative")]
    Negative(String),
}

impl IntOrDuration {
    /// The duration, or why it is not one.
    pub fn to_std(&self) -> Result<std::time::Duration, DurationError> {
        match self {
            IntOrDuration::Seconds(s) if *s < 0 => Err(DurationError::Negative(s.to_string())),
            IntOrDuration::Seconds(s) => Ok(std::time::Duration::from_secs(*s as u64)),
            IntOrDuration::Text(t) => parse_go_or_seconds(t),
        }
    }
}

impl fmt::Display for IntOrDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrDuration::Seconds(s) => write!(f, "{s}s"),
            IntOrDuration::Text(t) => f.write_str(t),
        }
    }
}

/// Parses a numeric string as seconds, otherwise a Go duration string (`1h30m`, `250ms`).
pub fn parse_go_or_seconds(text: &str) -> Result<std::time::Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Unparseable(text.to_string()));
    }
    if let Ok(secs) = trimmed.parse::<i64>() {
        if secs < 0 {
            return Err(DurationError::Negative(text.to_string()));
        }
        return Ok(std::time::Duration::from_secs(secs as u64));
    }
    let parsed = parse_go(trimmed).map_err(|_| DurationError::Unparseable(text.to_string()))?;
    if parsed.is_negative() {
        return Err(DurationError::Negative(text.to_string()));
    }
    Ok(parsed.into())
}

/// Parses a Go duration string with Go's `time.ParseDuration` grammar: an optional sign, then
/// `0` or one or more decimal numbers each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`),
/// at most about 292 years (Go's limit, `i64::MAX` nanoseconds).
///
/// The text is checked here before kube's parser reads it: that parser panics on text Go
/// refuses (`-5s-5s`: a sign in the middle; `9999999999999999999h`: an overflow), and the text
/// comes from manifests.
pub fn parse_go(text: &str) -> Result<kube::core::Duration, String> {
    check_go_syntax(text)?;
    text.parse::<kube::core::Duration>()
        .map_err(|e| e.to_string())
}

fn check_go_syntax(text: &str) -> Result<(), String> {
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("\u{00b5}s", 1_000),
        ("\u{03bc}s", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let rest = text.strip_prefix(['-', '+']).unwrap_or(text);
    if rest == "0" {
        return Ok(());
    }
    if rest.is_empty() {
        return Err("no number".to_string());
    }
    let digits = |t: &str| t.bytes().take_while(u8::is_ascii_digit).count();
    let mut s = rest;
    // An upper bound of the total in nanoseconds: each term's whole part plus one unit for its
    // fraction.
    let mut total: u128 = 0;
    while !s.is_empty() {
        let whole = digits(s);
        let (int_part, mut t) = s.split_at(whole);
        let mut frac = 0;
        if let Some(after) = t.strip_prefix('.') {
            frac = digits(after);
            t = &after[frac..];
        }
        if whole == 0 && frac == 0 {
            return Err(format!("expected a number at {s:?}"));
        }
        let unit_len = t
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(t.len());
        let (unit, next) = t.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, n)| *n)
            .ok_or_else(|| format!("unknown unit {unit:?}"))?;
        // More than 20 digits is past i64::MAX nanoseconds in any unit.
        let int_part = int_part.trim_start_matches('0');
        if int_part.len() > 20 {
            return Err("duration out of range".to_string());
        }
        let n: u128 = int_part.parse().unwrap_or(0);
        total = total
            .saturating_add(n.saturating_mul(scale))
            .saturating_add(scale);
        if total > i64::MAX as u128 + 3_600_000_000_000 {
            return Err("duration out of range".to_string());
        }
        s = next;
    }
    Ok(())
}

/// A Go duration string (`30s`, `5m`, `1h30m`), as Argo Rollouts' `DurationString`. It is kept
/// as written so that an analysis template may use a `{{args.NAME}}` placeholder: the text is
/// read as a duration only after the arguments are substituted, when the run is built.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct DurationString(pub String);

impl DurationString {
    /// The duration, or why the text is not one (empty text is no duration: `None`).
    pub fn parse(&self) -> Result<Option<kube::core::Duration>, String> {
        let text = self.0.trim();
        if text.is_empty() {
            return Ok(None);
        }
        parse_go(text)
            .map(Some)
            .map_err(|e| format!("not a Go duration such as 30s, 5m or 1h30m ({e})"))
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DurationString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DurationString(s.to_string()))
    }
}

impl From<&str> for DurationString {
    fn from(s: &str) -> Self {
        DurationString(s.to_string())
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for DurationString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DurationString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

impl JsonSchema for IntOrDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "description": "Whole seconds (30) or a Go duration string (30s, 5m, 1h30m)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn integer_and_numeric_string_are_seconds() {
        assert_eq!(
            IntOrDuration::Seconds(30).to_std(),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(
            IntOrDuration::Text("45".into()).to_std(),
            Ok(Duration::from_secs(45))
        );
    }

    #[test]
    fn go_duration_strings_parse_like_go() {
        assert_eq!(
            IntOrDuration::Text("1h30m".into()).to_std(),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(
            IntOrDuration::Text("250ms".into()).to_std(),
            Ok(Duration::from_millis(250))
        );
    }

    #[test]
    fn non_go_forms_are_rejected() {
        for bad in ["2d", "1h 30m", "soon", ""] {
            assert!(
                IntOrDuration::Text(bad.into()).to_std().is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(IntOrDuration::Seconds(-1).to_std().is_err());
        assert!(IntOrDuration::Text("-5s".into()).to_std().is_err());
    }

    #[test]
    fn deserializes_both_forms() {
        let n: IntOrDuration = serde_json::from_str("10").unwrap();
        let s: IntOrDuration = serde_json::from_str("\"10m\"").unwrap();
        assert_eq!(n, IntOrDuration::Seconds(10));
        assert_eq!(s, IntOrDuration::Text("10m".into()));
    }
}
