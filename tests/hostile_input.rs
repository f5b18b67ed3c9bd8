//! Hostile and huge input: what a careless user or an attacker can hand Sluice is refused
//! before it is parsed (the message is the refusal's, not the parser's), with a message that
//! says why, and never costs unbounded time or memory. How fast is for `cargo bench`-style
//! commands, not for these tests: the refusals below are the checks that run in linear time
//! before any parser sees the text.

use sluice::cli::lint::{
    MAX_DOCUMENT_BYTES, MAX_FILE_BYTES, Report, lint_paths, lint_sources, read_bounded,
};

fn lint_text(text: String) -> Report {
    lint_sources(&[("hostile.yaml".to_string(), text)], &[])
}

fn messages(report: &Report) -> Vec<String> {
    report.findings.iter().map(ToString::to_string).collect()
}

#[test]
fn a_billion_laughs_yaml_bomb_is_refused_fast() {
    // Nine levels of ten aliases each: 10^9 strings if expanded.
    let mut text = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    text.push_str("apiVersion: sluice.dev/v1alpha1\nkind: Rollout\n");
    let report = lint_text(text);
    let all = messages(&report);
    assert!(
        all.iter().any(|m| m.contains("hostile.yaml:")
            && m.contains("not valid YAML")
            && m.contains("repetition limit")),
        "{all:?}"
    );
}

#[test]
fn deeply_nested_yaml_is_refused_fast_not_after_minutes_of_parsing() {
    for text in [
        format!("spec: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("spec: {}1{}\n", "{a: ".repeat(50_000), "}".repeat(50_000)),
        (0..1_500).fold(String::from("spec:\n"), |mut s, i| {
            s.push_str(&" ".repeat(i + 1));
            s.push_str("- \n");
            s
        }),
    ] {
        let report = lint_text(text);
        let all = messages(&report);
        assert!(
            all.iter().any(|m| m.contains("not valid YAML")
                && (m.contains("recursion limit") || m.contains("nested deeper than 128 levels"))),
            "{all:?}"
        );
    }
}

#[test]
fn a_ten_megabyte_manifest_is_refused_fast_with_its_size() {
    let mut text = String::from(
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: big\n  annotations:\n",
    );
    let mut i = 0;
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(&format!("    note-{i}: \"{}\"\n", "x".repeat(200)));
        i += 1;
    }
    assert!(text.len() > MAX_FILE_BYTES);
    let report = lint_text(text.clone());
    assert_eq!(
        messages(&report),
        ["hostile.yaml:1: the file is 10.0 MiB, over the limit of 8 MiB; not read"]
    );

    // From disk the same, without reading the whole file.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, &text).expect("write");
    let report = lint_paths(std::slice::from_ref(&path), &[]).expect("lint");
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(
        report.findings[0]
            .message
            .contains("over the limit of 8 MiB")
    );
}

#[test]
fn one_document_over_the_api_servers_limit_is_refused_and_the_others_are_linted() {
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: \"{}\"\n",
        "x".repeat(MAX_DOCUMENT_BYTES)
    );
    let small = "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  strategy: {canary: {steps: [{setWeight: 500}]}}\n";
    let report = lint_text(format!("{small}---\n{big}"));
    let all = messages(&report);
    assert!(
        all.iter()
            .any(|m| m
                .starts_with("hostile.yaml:7: this document is 3.0 MiB, over the limit of 3 MiB")),
        "{all:?}"
    );
    assert!(all.iter().any(|m| m.contains("setWeight")), "{all:?}");
}

#[test]
fn an_endless_input_is_read_only_one_byte_past_the_limit() {
    // `std::io::repeat` never ends: reading it whole would never return.
    let text = read_bounded(std::io::Read::take(std::io::repeat(b'x'), u64::MAX)).expect("read");
    assert_eq!(text.len(), MAX_FILE_BYTES + 1);
}

#[test]
fn convert_refuses_huge_and_deeply_nested_manifests_as_lint_does() {
    use sluice::cli::convert::convert;
    let huge = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\n# {}\n",
        "x".repeat(MAX_FILE_BYTES)
    );
    let Err(err) = convert(&huge) else {
        panic!("a 8 MiB file is refused")
    };
    assert_eq!(
        err,
        "the file is 8.0 MiB, over the limit of 8 MiB; not read"
    );

    let rollout = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\n";
    let big_doc = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: \"{}\"\n",
        "x".repeat(MAX_DOCUMENT_BYTES)
    );
    let Err(err) = convert(&format!("{rollout}---\n{big_doc}")) else {
        panic!("a document over 3 MiB is refused")
    };
    assert!(
        err.starts_with("line 5: this document is 3.0 MiB, over the limit of 3 MiB"),
        "{err}"
    );

    let deep = format!(
        "{rollout}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata: {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let Err(err) = convert(&deep) else {
        panic!("deep nesting is refused")
    };
    assert_eq!(
        err,
        "line 8: not valid YAML: nested deeper than 128 levels; not read"
    );

    // Within the bounds, the same manifest converts.
    let ok = convert(rollout).expect("a small Rollout converts");
    assert!(ok.yaml.contains("sluice.dev/v1alpha1"), "{}", ok.yaml);
}

#[test]
fn two_thousand_documents_are_all_linted_with_the_schemas_built_once() {
    // The CRD schemas are generated once, not once per document.
    let doc = "apiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: t}\nspec:\n  metrics: [{name: m, provider: {prometheus: {query: up}}}]\n";
    let text = vec![doc; 2_000].join("---\n");
    let report = lint_text(text);
    assert_eq!(report.objects, 2_000);
}

#[test]
fn a_metric_counting_millions_of_measurements_keeps_a_bounded_status() {
    use sluice::analysis::accounting::{DEFAULT_MEASUREMENT_RETENTION, record};
    use sluice::api::analysis::{Measurement, MetricResult};
    use sluice::api::common::AnalysisPhase;
    // `count: 3000000` at `interval: 1s`: the counters grow, the history does not.
    let mut result = MetricResult::default();
    for i in 0..3_000_000 {
        let phase = if i % 97 == 0 {
            AnalysisPhase::Error
        } else {
            AnalysisPhase::Successful
        };
        record(
            &mut result,
            Measurement {
                phase,
                value: Some("0.99".into()),
                ..Measurement::default()
            },
            DEFAULT_MEASUREMENT_RETENTION,
        );
    }
    assert_eq!(result.measurements.len(), DEFAULT_MEASUREMENT_RETENTION);
    assert_eq!(result.count, 3_000_000 - 30_928);
    let size = serde_json::to_vec(&result).expect("json").len();
    assert!(size < 4096, "status of {size} bytes");
}
