//! Line numbers of fields in YAML text, for `file:line: field: message`.
//!
//! serde_yaml does not keep positions, so this walks the block structure of the text by
//! indentation: good for the block-style YAML people write for Kubernetes. When a path goes into
//! flow style (`{...}`, `[...]`) or a field is absent, the deepest line found is returned (the
//! parent), which is still where the reader should look.

/// One document of a multi-document YAML file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Text of the document.
    pub text: String,
    /// 1-based line of the document's first line in the file.
    pub first_line: usize,
}

/// Splits a file at `---` lines.
pub fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() || line.starts_with("--- ") {
            docs.push(Document {
                text: std::mem::take(&mut current),
                first_line,
            });
            first_line = i + 2;
            // `--- key: value` is rare in manifests; the rest of the line is dropped on purpose.
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push(Document {
        text: current,
        first_line,
    });
    docs.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `spec.strategy.canary.steps[2].setWeight` into segments. Keys may contain `/` or `-`;
/// a map key containing dots cannot be addressed (rare in the fields we report).
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            let key = &rest[..open];
            if !key.is_empty() {
                out.push(Segment::Key(key.to_string()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(i) = stripped[..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Segment::Key(rest.to_string()));
        }
    }
    out
}

#[derive(Debug)]
struct Line<'a> {
    /// Column of the content after indentation and any `- ` prefixes.
    col: usize,
    /// Columns of the `- ` markers on this line.
    dashes: Vec<usize>,
    /// `key` when the content starts with `key:`.
    key: Option<&'a str>,
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let mut col = line.len() - trimmed.len();
    let mut rest = trimmed;
    let mut dashes = Vec::new();
    while rest == "-" || rest.starts_with("- ") {
        dashes.push(col);
        let after = rest[1..].trim_start();
        col += rest.len() - after.len();
        rest = after;
    }
    let key = key_of(rest);
    Some(Line { col, dashes, key })
}

fn key_of(content: &str) -> Option<&str> {
    let (raw, after) = if let Some(q) = content.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], &q[end + 1..])
    } else if let Some(q) = content.strip_prefix('\'') {
        let end = q.find('\'')?;
        (&q[..end], &q[end + 1..])
    } else {
        let end = content.find(':')?;
        (&content[..end], &content[end..])
    };
    let after = after.strip_prefix(':')?;
    (after.is_empty() || after.starts_with(' ')).then_some(raw.trim())
}

/// The 1-based line (within `text`) of the field at `path`, or of its deepest ancestor present.
/// `None` only when not even the first segment is found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<Option<Line>> = text.lines().map(parse_line).collect();
    let segs = segments(path);
    // Current block: lines [lo, hi) whose content belongs to the node reached so far; `parent`
    // is the column of that node's key (children are deeper, or at the same column for a
    // sequence written without indentation).
    let mut lo = 0;
    let mut hi = lines.len();
    let mut parent_col: Option<usize> = None;
    let mut found: Option<usize> = None;
    for seg in segs {
        match seg {
            Segment::Key(k) => {
                // The mapping's keys sit at the column of the first content line of the block.
                let Some(first) = (lo..hi).find_map(|i| lines[i].as_ref().map(|l| l.col)) else {
                    break;
                };
                let hit = (lo..hi).find(|&i| {
                    lines[i]
                        .as_ref()
                        .is_some_and(|l| l.col == first && l.key == Some(k.as_str()))
                });
                let Some(i) = hit else { break };
                found = Some(i);
                let col = first;
                let end = (i + 1..hi)
                    .find(|&j| match &lines[j] {
                        Some(l) => {
                            let start = l.dashes.first().copied().unwrap_or(l.col);
                            start < col || (start == col && l.dashes.is_empty())
                        }
                        None => false,
                    })
                    .unwrap_or(hi);
                lo = i + 1;
                hi = end;
                parent_col = Some(col);
                // A value on the key's own line (scalar or flow): nothing deeper to walk.
                if lines[lo..hi].iter().all(Option::is_none) {
                    hi = lo;
                }
            }
            Segment::Index(n) => {
                let Some(dash_col) = (lo..hi).find_map(|i| {
                    lines[i]
                        .as_ref()
                        .and_then(|l| l.dashes.first().copied())
                        .filter(|&d| parent_col.is_none_or(|p| d >= p))
                }) else {
                    break;
                };
                let items: Vec<usize> = (lo..hi)
                    .filter(|&i| {
                        lines[i]
                            .as_ref()
                            .is_some_and(|l| l.dashes.first() == Some(&dash_col))
                    })
                    .collect();
                let Some(&start) = items.get(n) else { break };
                found = Some(start);
                let end = items.get(n + 1).copied().unwrap_or(hi);
                // The item's first key is on the dash line, at the column after `- `, which is
                // where `parse_line` puts `col`: the next Key step matches it directly.
                lo = start;
                hi = end;
                parent_col = Some(dash_col);
            }
        }
    }
    found.map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: web
spec:
  replicas: 3
  strategy:
    canary:
      steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 150
      - analysis:
          templates:
            - templateName: success-rate
      trafficRouting:
        nginx:
          stableIngress: web
";

    #[test]
    fn finds_nested_keys_and_list_items() {
        assert_eq!(line_of(DOC, "spec.replicas"), Some(6));
        assert_eq!(
            line_of(DOC, "spec.strategy.canary.steps[2].setWeight"),
            Some(12)
        );
        assert_eq!(line_of(DOC, "spec.strategy.canary.steps[1]"), Some(11));
        assert_eq!(
            line_of(
                DOC,
                "spec.strategy.canary.steps[3].analysis.templates[0].templateName"
            ),
            Some(15)
        );
        assert_eq!(
            line_of(
                DOC,
                "spec.strategy.canary.trafficRouting.nginx.stableIngress"
            ),
            Some(18)
        );
    }

    #[test]
    fn missing_field_points_at_deepest_parent() {
        assert_eq!(line_of(DOC, "spec.strategy.canary.canaryService"), Some(8));
        assert_eq!(
            line_of(DOC, "spec.strategy.canary.steps[9].setWeight"),
            Some(9)
        );
    }

    #[test]
    fn documents_keep_their_first_line() {
        let docs = split_documents("a: 1\n---\nb: 2\nc: 3\n---\n# only a comment\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].first_line, 3);
        assert_eq!(line_of(&docs[1].text, "c"), Some(2));
    }
}
