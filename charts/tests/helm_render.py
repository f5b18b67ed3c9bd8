"""Lints and renders charts/sluice with real Helm (the helm-python-sdk package embeds Helm's Go
library) and writes each scenario's manifests for tests/chart.rs to check and apply.

Usage: python3 charts/tests/helm_render.py CHART_DIR OUT_DIR

For each scenario in SCENARIOS it writes OUT_DIR/<scenario>.yaml (templates) and
OUT_DIR/crds.yaml (the chart's crds/ folder, as Helm loads it). Exits non-zero on any lint
error or warning, render error, or a values file the schema rejects.
"""

import json
import os
import sys

import helm_python as helm

SCENARIOS = {
    "default": {},
    "custom": {
        "watchNamespace": "shop",
        "replicaCount": 3,
        "image": {"repository": "registry.example.com/sluice", "tag": "v9"},
        "controller": {
            "instanceID": "blue",
            "logFormat": "text",
            "logLevel": "debug,kube=info",
            "qps": 12.5,
            "burst": 30,
            "metricAddressAllowlist": ["http://prometheus.monitoring:9090", "https://thanos.example.com"],
            "defaultPrometheusAddress": "http://prometheus.monitoring:9090",
            "istioAPIVersion": "networking.istio.io/v1beta1",
            "rolloutWorkers": 4,
            "analysisWorkers": 6,
            "leaderElection": {"enabled": True, "leaseDurationSeconds": 20},
            "adminPort": 9100,
            "extraArgs": ["--lease-name=shop-lock"],
        },
        "rbac": {"secrets": False, "istio": False, "gatewayAPI": False},
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
            "prometheusRule": {"enabled": True},
        },
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        },
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
    },
}

# Values the schema must refuse (a typo'd key, a wrong type, an unknown log format).
INVALID = {
    "unknown key": {"controller": {"logformat": "json"}},
    "wrong type": {"replicaCount": "two"},
    "bad log format": {"controller": {"logFormat": "xml"}},
    "bad instance id": {"controller": {"instanceID": "Has Spaces"}},
}


def main() -> int:
    chart_dir, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    print(f"helm SDK {helm.helm_sdk_version()}")
    chart = helm.Chart.load(chart_dir)
    failures = []
    for name, values in SCENARIOS.items():
        report = helm.lint(chart_dir, values, strict=True, namespace="sluice-system")
        problems = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
        problems += report.get("errors") or []
        if problems:
            failures.append(f"lint {name}: {json.dumps(problems)}")
        chart.validate_schema(values)
        manifests = chart.render(values, name="sluice", namespace="sluice-system", is_install=True)
        docs = []
        for path in sorted(manifests):
            text = manifests[path].strip()
            if path.endswith(".yaml") and text:
                docs.append(f"# Source: {path}\n{text}")
        with open(os.path.join(out_dir, f"{name}.yaml"), "w") as f:
            f.write("\n---\n".join(docs) + "\n")
        print(f"rendered {name}: {len(docs)} templates")
    for label, values in INVALID.items():
        try:
            chart.validate_schema(values)
        except helm.HelmError as e:
            print(f"schema rejects {label}: {str(e).splitlines()[0][:120]}")
        else:
            failures.append(f"schema accepted invalid values ({label}): {values}")
    with open(os.path.join(out_dir, "crds.yaml"), "w") as f:
        f.write("\n---\n".join(c["data"].strip() for c in chart.crds) + "\n")
    # The packaged chart (what `helm package` publishes) carries the same CRDs and renders the same.
    archive = helm.package(chart_dir, destination=out_dir)
    with open(archive, "rb") as f:
        packaged = helm.Chart.load_archive(f.read())
    if sorted(c["data"] for c in packaged.crds) != sorted(c["data"] for c in chart.crds):
        failures.append("the packaged chart's CRDs differ from crds/")
    if packaged.render({}, name="sluice", namespace="sluice-system", is_install=True) != chart.render(
        {}, name="sluice", namespace="sluice-system", is_install=True
    ):
        failures.append("the packaged chart renders differently")
    print(f"packaged {os.path.basename(archive)}")
    with open(os.path.join(out_dir, "crd-names.json"), "w") as f:
        json.dump(sorted(c["name"] for c in chart.crds), f)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
