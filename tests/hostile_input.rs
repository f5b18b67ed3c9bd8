//! Hostile and huge input: what a careless user or an attacker can hand Sluice is refused fast,
//! with a message that says why, and never costs unbounded time or memory.

use std::time::{Duration, Instant};

use sluice::cli::lint::{MAX_DOCUMENT_BYTES, MAX_FILE_BYTES, Report, lint_paths, lint_sources};

fn lint_text(text: String) -> (Report, Duration) {
    let started = Instant::now();
    let report = lint_sources(&[("hostile.yaml".to_string(), text)], &[]);
    (report, started.elapsed())
}

fn messages(report: &Report) -> Vec<String> {
    report.findings.iter().map(ToString::to_string).collect()
}

/// Generous for a debug build on a busy machine; each case takes milliseconds in release.
const FAST: Duration = Duration::from_secs(5);

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
    let (report, took) = lint_text(text);
    let all = messages(&report);
    assert!(took < FAST, "took {took:?}");
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
        let (report, took) = lint_text(text);
        let all = messages(&report);
        assert!(took < FAST, "took {took:?}");
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
    let (report, took) = lint_text(text.clone());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        messages(&report),
        ["hostile.yaml:1: the file is 10.0 MiB, over lint's limit of 8 MiB; not read"]
    );

    // From disk the same, without reading the whole file.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, &text).expect("write");
    let started = Instant::now();
    let report = lint_paths(std::slice::from_ref(&path), &[]).expect("lint");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(
        report.findings[0]
            .message
            .contains("over lint's limit of 8 MiB")
    );
}

#[test]
fn one_document_over_the_api_servers_limit_is_refused_and_the_others_are_linted() {
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: \"{}\"\n",
        "x".repeat(MAX_DOCUMENT_BYTES)
    );
    let small = "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  strategy: {canary: {steps: [{setWeight: 500}]}}\n";
    let (report, took) = lint_text(format!("{small}---\n{big}"));
    assert!(took < FAST, "took {took:?}");
    let all = messages(&report);
    assert!(
        all.iter().any(|m| m
            .starts_with("hostile.yaml:7: this document is 3.0 MiB, over lint's limit of 3 MiB")),
        "{all:?}"
    );
    assert!(all.iter().any(|m| m.contains("setWeight")), "{all:?}");
}

#[test]
fn many_small_documents_are_linted_quickly() {
    // The CRD schemas are generated once, not once per document.
    let doc = "apiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: t}\nspec:\n  metrics: [{name: m, provider: {prometheus: {query: up}}}]\n";
    let text = vec![doc; 2_000].join("---\n");
    let (report, took) = lint_text(text);
    assert_eq!(report.objects, 2_000);
    assert!(took < Duration::from_secs(20), "took {took:?}");
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
