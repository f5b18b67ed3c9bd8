//! `sluice lint`: the fixture suite (every good manifest passes, every bad one reports exactly
//! its expected `line: field: message` lines), the binary's exit codes and JSON, and the
//! repository's own templates and chart examples.

use std::path::{Path, PathBuf};

use sluice::cli::lint::{lint_paths, lint_sources};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const FIXTURES: &str = "tests/fixtures/lint";

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

#[test]
fn good_fixtures_have_no_findings() -> Result {
    let dir = Path::new(FIXTURES).join("good");
    let files = yaml_files(&dir)?;
    assert!(files.len() >= 3, "the good fixtures are missing");
    // Each alone, so a reference resolves only within its own file.
    for f in &files {
        let report = lint_paths(std::slice::from_ref(f), &[])?;
        assert!(
            report.objects > 0,
            "{}: no Sluice object checked",
            f.display()
        );
        assert!(
            report.findings.is_empty(),
            "{}: {:#?}",
            f.display(),
            report.findings
        );
    }
    Ok(())
}

#[test]
fn each_bad_fixture_reports_exactly_its_expected_findings() -> Result {
    let dir = Path::new(FIXTURES).join("bad");
    let files = yaml_files(&dir)?;
    assert!(files.len() >= 8, "the bad fixtures are missing");
    for f in &files {
        let expected_path = f.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path)
            .map_err(|e| format!("{}: {e}", expected_path.display()))?;
        let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
        assert!(
            !expected.is_empty(),
            "{}: a bad fixture expects findings",
            f.display()
        );
        let report = lint_paths(std::slice::from_ref(f), &[])?;
        let prefix = format!("{}:", f.display());
        let got: Vec<String> = report
            .findings
            .iter()
            .map(|x| x.to_string().trim_start_matches(&prefix).to_string())
            .collect();
        assert_eq!(got, expected, "{}", f.display());
    }
    Ok(())
}

#[test]
fn an_external_template_satisfies_a_reference() -> Result {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("bad/references.yaml"))?;
    let sources = [("references.yaml".to_string(), text)];
    let without = lint_sources(&sources, &[]);
    assert!(without.findings.iter().any(|f| {
        f.message
            .starts_with("ClusterAnalysisTemplate \"error-budget\" is not among")
    }));
    let with = lint_sources(&sources, &["cluster/error-budget".to_string()]);
    assert!(
        with.findings
            .iter()
            .all(|f| !f.message.contains("error-budget")),
        "{:#?}",
        with.findings
    );
    // A namespaced template of the same name does not stand in for a cluster one.
    let wrong = lint_sources(&sources, &["error-budget".to_string()]);
    assert!(
        wrong
            .findings
            .iter()
            .any(|f| f.message.contains("error-budget"))
    );
    Ok(())
}

#[test]
fn references_resolve_across_files() -> Result {
    let rollout = std::fs::read_to_string(Path::new(FIXTURES).join("good/rollout-nginx.yaml"))?;
    // The Rollout alone: its template is missing.
    let (head, _) = rollout
        .split_once("kind: AnalysisTemplate")
        .ok_or("fixture changed")?;
    let head = head
        .trim_end_matches("apiVersion: sluice.dev/v1alpha1\n")
        .to_string();
    let alone = lint_sources(&[("rollout.yaml".into(), head.clone())], &[]);
    assert_eq!(alone.findings.len(), 1, "{:#?}", alone.findings);
    assert_eq!(
        alone.findings[0].field,
        "spec.strategy.canary.steps[2].analysis.templates[0].templateName"
    );
    let template = format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate{}",
        rollout
            .split_once("kind: AnalysisTemplate")
            .ok_or("fixture changed")?
            .1
    );
    let both = lint_sources(
        &[
            ("rollout.yaml".into(), head),
            ("template.yaml".into(), template),
        ],
        &[],
    );
    assert!(both.findings.is_empty(), "{:#?}", both.findings);
    Ok(())
}

#[test]
fn binary_exit_codes_and_json_output() -> Result {
    let bin = env!("CARGO_BIN_EXE_sluice");
    let good = std::process::Command::new(bin)
        .args(["lint", "-f", &format!("{FIXTURES}/good")])
        .output()?;
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );

    let bad = std::process::Command::new(bin)
        .args(["lint", "-f", &format!("{FIXTURES}/bad/invalid-steps.yaml")])
        .output()?;
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        stdout.contains(&format!(
            "\n{FIXTURES}/bad/invalid-steps.yaml:27: spec.strategy.canary.steps[1].setWeight: must be between 0 and 100"
        )),
        "{stdout}"
    );

    let json = std::process::Command::new(bin)
        .args([
            "lint",
            "-f",
            &format!("{FIXTURES}/bad/wrong-types.yaml"),
            "--output",
            "json",
        ])
        .output()?;
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout)?;
    assert_eq!(v["objects"], 1);
    assert_eq!(v["findings"][0]["line"], 6);
    assert_eq!(v["findings"][0]["field"], "spec.replicas");
    assert_eq!(
        v["findings"][0]["message"],
        "must be an integer, got string"
    );

    let missing = std::process::Command::new(bin)
        .args(["lint", "-f", "no/such/file.yaml"])
        .output()?;
    assert_ne!(missing.status.code(), Some(0));
    Ok(())
}

/// The repository's shipped templates and the Helm chart's examples must lint clean. Reports how
/// many files it read, so a run over nothing is visible in the test output.
#[test]
fn repository_templates_and_chart_examples_lint_clean() -> Result {
    let mut paths = Vec::new();
    for dir in ["analysis-templates", "charts", "examples"] {
        let p = PathBuf::from(dir);
        if p.is_dir() {
            paths.push(p);
        }
    }
    let mut files = sluice::cli::lint::expand(&paths)?;
    // A chart's `templates/` hold Go templates that Helm renders, not manifests.
    files.retain(|f| {
        !f.ancestors().any(|a| {
            a.file_name().is_some_and(|n| n == "templates")
                && a.parent()
                    .is_some_and(|chart| chart.join("Chart.yaml").is_file())
        })
    });
    let report = lint_paths(&files, &[])?;
    println!(
        "linted {} YAML files with {} Sluice objects",
        report.files, report.objects
    );
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    Ok(())
}

/// `{{args.*}}` in `interval`, `initialDelay`, `count` and the limits decodes (Argo Rollouts
/// types them as strings); the values a Rollout passes are checked against the fields, and a
/// value that does not fit is reported at the Rollout's reference, naming template, metric and
/// field. A template with problems of its own is never reported as missing.
#[test]
fn templated_interval_and_limits_are_checked_with_the_values_passed() -> Result {
    let text =
        std::fs::read_to_string("tests/fixtures/argo/supported/analysis-templated-limits.yaml")?;
    let clean = lint_sources(&[("t.yaml".into(), text.clone())], &[]);
    assert!(clean.findings.is_empty(), "{:#?}", clean.findings);

    let bad = text.replace("value: 1m", "value: \"5\"");
    let report = lint_sources(&[("t.yaml".into(), bad)], &[]);
    let got: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains(
            "spec.strategy.canary.steps[1].analysis.templates[0].templateName: AnalysisTemplate \
             \"success-rate\" with the arguments passed here: metric \"success-rate\": \
             initialDelay cannot read \"5\""
        ),
        "{got:#?}"
    );

    let bad_count = text.replace("value: \"5\"", "value: five");
    let report = lint_sources(&[("t.yaml".into(), bad_count)], &[]);
    assert!(
        report.findings.iter().any(|f| f
            .message
            .contains("metric \"success-rate\": count \"five\" is not an integer")),
        "{:#?}",
        report.findings
    );

    // A template whose own spec is wrong is reported there, not as missing from the Rollout.
    let typo = text.replace("    interval: \"{{args.interval}}\"", "    intervall: 5m");
    let report = lint_sources(&[("t.yaml".into(), typo)], &[]);
    assert!(
        report
            .findings
            .iter()
            .all(|f| !f.message.contains("not among")),
        "{:#?}",
        report.findings
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("unknown field \"intervall\"")),
        "{:#?}",
        report.findings
    );
    Ok(())
}

/// `# expect: TEXT` lines of a fixture: each must be part of some finding.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

/// Manifests shaped like Argo Rollouts' own examples, with only `apiVersion` changed: those using
/// supported features lint clean, those using features Sluice lacks are told so by name (and
/// nothing else is reported about them), malformed ones are rejected with their field.
#[test]
fn argo_shaped_manifests_lint_as_supported_unsupported_or_malformed() -> Result {
    let root = Path::new("tests/fixtures/argo");
    for f in yaml_files(&root.join("supported"))? {
        let report = lint_paths(std::slice::from_ref(&f), &[])?;
        assert!(report.objects > 0, "{}: no Sluice object", f.display());
        assert!(
            report.findings.is_empty(),
            "{}: {:#?}",
            f.display(),
            report.findings
        );
    }
    for (dir, only_not_supported) in [("unsupported", true), ("malformed", false)] {
        let files = yaml_files(&root.join(dir))?;
        assert!(files.len() >= 3, "{dir} fixtures are missing");
        for f in files {
            let expected = expectations(&std::fs::read_to_string(&f)?);
            assert!(!expected.is_empty(), "{}: no `# expect:` line", f.display());
            let report = lint_paths(std::slice::from_ref(&f), &[])?;
            let got: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
            for e in &expected {
                assert!(
                    got.iter().any(|g| g.contains(e.as_str())),
                    "{}: expected {e:?} in {got:#?}",
                    f.display()
                );
            }
            if only_not_supported {
                assert!(
                    got.iter().all(|g| g.contains("not supported by Sluice")),
                    "{}: {got:#?}",
                    f.display()
                );
            }
            assert!(got.len() >= expected.len(), "{}: {got:#?}", f.display());
        }
    }
    Ok(())
}

const GATEWAY_ROLLOUT: &str = r#"apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: web:1}]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web-stable
      trafficRouting:
        plugins:
          argoproj-labs/gatewayAPI:
            httpRoutes: [{name: web}, {name: web-internal}]
      steps: [{setWeight: 20}]
"#;

const WEB_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  rules:
  - backendRefs:
    - {name: web-stable, port: 80}
    - {name: web-canary, port: 80}
"#;

/// Routes a Rollout names are checked when the files define Gateway API routes: each must be
/// there, with a rule referencing both Services; a Rollout linted alone is not told about them.
#[test]
fn gateway_api_routes_named_by_a_rollout_are_checked_against_the_linted_routes() {
    let alone = lint_sources(&[("rollout.yaml".into(), GATEWAY_ROLLOUT.into())], &[]);
    assert!(alone.findings.is_empty(), "{:#?}", alone.findings);

    let with_route = lint_sources(
        &[
            ("rollout.yaml".into(), GATEWAY_ROLLOUT.into()),
            ("route.yaml".into(), WEB_ROUTE.into()),
        ],
        &[],
    );
    let got: Vec<String> = with_route
        .findings
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains("httpRoutes[1]")
            && got[0].contains(
                "HTTPRoute \"web-internal\" is not among the linted files, which define other \
                 Gateway API routes; add its file"
            ),
        "{got:#?}"
    );

    let internal = WEB_ROUTE
        .replace("name: web}", "name: web-internal}")
        .replace("web-canary", "web-preview");
    let both = lint_sources(
        &[
            ("rollout.yaml".into(), GATEWAY_ROLLOUT.into()),
            ("route.yaml".into(), format!("{WEB_ROUTE}---\n{internal}")),
        ],
        &[],
    );
    let got: Vec<String> = both.findings.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].contains(
            "httproute 'web-internal' has no rule whose backendRefs reference both the stable \
             Service 'web-stable' and the canary Service 'web-canary'"
        ),
        "{got:#?}"
    );
}

/// A route kind Sluice does not know, in the plugin's configuration, is refused by name rather
/// than ignored; other plugins are refused by name too.
#[test]
fn unknown_gateway_route_kinds_and_other_plugins_are_refused() {
    let udp = GATEWAY_ROLLOUT.replace(
        "httpRoutes: [{name: web}, {name: web-internal}]",
        "udpRoute: web",
    );
    let report = lint_sources(&[("rollout.yaml".into(), udp)], &[]);
    let got: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert!(
        got.iter().any(|g| g.contains("udpRoute")
            && g.contains("unknown route kind \"udpRoute\": Sluice weights httpRoute(s), grpcRoute(s), tcpRoute(s) and tlsRoute(s)")),
        "{got:#?}"
    );
    let other = GATEWAY_ROLLOUT.replace("argoproj-labs/gatewayAPI", "acme/mesh");
    let report = lint_sources(&[("rollout.yaml".into(), other)], &[]);
    let got: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
    assert!(
        got.iter()
            .any(|g| g.contains("traffic router plugins (acme/mesh) are not supported by Sluice")),
        "{got:#?}"
    );
}
