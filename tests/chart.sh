#!/usr/bin/env bash
# Checks of the Helm chart and its monitoring objects, with pinned helm and promtool
# (tests/tools/ensure.sh builds them from the Go module proxy into target/tools):
#   helm lint and helm template with the monitoring objects off (the default) and on;
#   with them off nothing of monitoring is rendered, with them on the ServiceMonitor
#   scrapes a port the metrics Services and the driver containers really have;
#   promtool check rules and promtool test rules (tests/chart/alerts.test.yaml) on the
#   rendered PrometheusRule; the dashboard JSON parses, in the file and in the
#   rendered ConfigMap; every PromQL expression names only metrics that exist
#   (tests/chart/metric_names.py), and that check rejects an unknown name.
# Prints one PASS/FAIL line per check and "chart: N passed, M failed"; exit 1 on failure.
# Needs Go (to build the tools once) and python3 with PyYAML.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=tests/tools/ensure.sh
source "$ROOT/tests/tools/ensure.sh"

CHART="$ROOT/charts/proxmox-csi"
T="$ROOT/tests/chart"
RELEASE=proxmox-csi
NAMESPACE=csi-proxmox
WORK="$(mktemp -d /tmp/proxmox-csi-chart.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

PASSED=0; FAILED=0
check() { # name command... ; output kept in $WORK/<n>.log, shown on failure
    local name="$1"; shift
    local log="$WORK/check-$((PASSED + FAILED)).log"
    if "$@" >"$log" 2>&1; then
        PASSED=$((PASSED + 1)); echo "PASS  $name"
    else
        FAILED=$((FAILED + 1)); echo "FAIL  $name"; sed 's/^/      /' "$log" | tail -40
    fi
}

HELM="$(ensure_helm)" || { echo "FAIL  building helm"; echo "chart: 0 passed, 1 failed"; exit 1; }
PROMTOOL="$(ensure_promtool)" || { echo "FAIL  building promtool"; echo "chart: 0 passed, 1 failed"; exit 1; }
"$HELM" version --short
"$PROMTOOL" --version 2>&1 | head -1

OFF=(-f "$T/values-ci.yaml")
ON=(-f "$T/values-ci.yaml" -f "$T/monitoring-on.yaml")
render() { "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@"; }

# One line per rendered object: kind/name.
kinds() { python3 -c '
import sys, yaml
for d in yaml.safe_load_all(sys.stdin):
    if d: print(d["kind"] + "/" + d["metadata"]["name"])
' <"$1"; }

lint_strict() { "$HELM" lint --strict "$CHART" "$@"; }
check "helm lint (monitoring off)" lint_strict "${OFF[@]}"
check "helm lint (monitoring on)" lint_strict "${ON[@]}"
template_off() { render "${OFF[@]}" >"$WORK/off.yaml"; }
template_on() { render "${ON[@]}" >"$WORK/on.yaml"; }
check "helm template (monitoring off)" template_off
check "helm template (monitoring on)" template_on

monitoring_off_renders_none() {
    kinds "$WORK/off.yaml" | tee "$WORK/off.kinds"
    ! grep -E '^(ServiceMonitor|PrometheusRule)/|^Service/.*-metrics$|^ConfigMap/.*-dashboard$' "$WORK/off.kinds"
}
check "monitoring off: no ServiceMonitor, PrometheusRule, metrics Service or dashboard" monitoring_off_renders_none

monitoring_on_renders_all() {
    kinds "$WORK/on.yaml" | tee "$WORK/on.kinds"
    for want in "ServiceMonitor/$RELEASE" "PrometheusRule/$RELEASE" \
        "Service/$RELEASE-controller-metrics" "Service/$RELEASE-node-metrics" \
        "ConfigMap/$RELEASE-dashboard"; do
        grep -qx "$want" "$WORK/on.kinds" || { echo "missing $want"; return 1; }
    done
}
check "monitoring on: ServiceMonitor, PrometheusRule, 2 metrics Services, dashboard ConfigMap" monitoring_on_renders_all

# The ServiceMonitor's port must be a port of both Services, whose selectors must
# pick Pods (controller Deployment, node DaemonSet) with a container port of that
# name, which must be the port the driver is told to listen on (--metrics-address).
scrape_target_exists() {
    python3 - "$WORK/on.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
port = sm["spec"]["endpoints"][0]["port"]
sel = sm["spec"]["selector"]["matchLabels"]
svcs = [d for d in docs if d["kind"] == "Service"
        and all(d["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
assert len(svcs) == 2, f"ServiceMonitor selects {len(svcs)} Services, want 2"
workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
for svc in svcs:
    sp = [p for p in svc["spec"]["ports"] if p["name"] == port]
    assert sp, f"{svc['metadata']['name']} has no port {port}"
    picked = [w for w in workloads if all(
        w["spec"]["template"]["metadata"]["labels"].get(k) == v
        for k, v in svc["spec"]["selector"].items())]
    assert picked, f"{svc['metadata']['name']} selects no Pods"
    for w in picked:
        c = next(c for c in w["spec"]["template"]["spec"]["containers"] if c["name"] == "proxmox-csi")
        cp = [p for p in c.get("ports", []) if p["name"] == sp[0]["targetPort"]]
        assert cp, f"{w['metadata']['name']}: no container port {sp[0]['targetPort']}"
        flag = f"--metrics-address=0.0.0.0:{cp[0]['containerPort']}"
        assert flag in c["args"], f"{w['metadata']['name']}: {flag} not in args {c['args']}"
        print(f"{svc['metadata']['name']} -> {w['kind']}/{w['metadata']['name']} {flag}")
PY
}
check "ServiceMonitor port exists on the Services and the driver containers (--metrics-address)" scrape_target_exists

refuses_servicemonitor_without_metrics() {
    if render "${ON[@]}" --set metrics.enabled=false >"$WORK/nometrics.yaml" 2>&1; then
        echo "rendered although metrics.enabled=false"; return 1
    fi
    grep -q "monitoring.serviceMonitor.enabled needs metrics.enabled" "$WORK/nometrics.yaml"
}
check "helm template refuses a ServiceMonitor with metrics.enabled=false" refuses_servicemonitor_without_metrics

cluster_id_flags() { # no flag by default; clusterId and claimLegacyHolders reach the controller
    render "${OFF[@]}" >"$WORK/noid.yaml"
    if grep -q -- "--cluster-id" "$WORK/noid.yaml"; then echo "--cluster-id without clusterId"; return 1; fi
    render "${OFF[@]}" --set controller.clusterId=prod-a --set controller.claimLegacyHolders=false >"$WORK/id.yaml"
    grep -q -- "- --cluster-id=prod-a" "$WORK/id.yaml" && grep -q -- "- --claim-legacy-holders=false" "$WORK/id.yaml"
}
check "controller.clusterId renders --cluster-id and --claim-legacy-holders" cluster_id_flags

# promtool reads plain rule files (groups:), so the PrometheusRule's spec is taken out.
extract_rules() {
    python3 - "$WORK/on.yaml" "$WORK/rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rule = next(d for d in docs if d["kind"] == "PrometheusRule")
yaml.safe_dump(rule["spec"], open(sys.argv[2], "w"), sort_keys=False)
n = sum(len(g["rules"]) for g in rule["spec"]["groups"])
print(f"{n} rules")
PY
}
check "extract the rendered alert rules" extract_rules
check "promtool check rules" "$PROMTOOL" check rules "$WORK/rules.yaml"
cp "$T/alerts.test.yaml" "$WORK/alerts.test.yaml"
check "promtool test rules (tests/chart/alerts.test.yaml)" "$PROMTOOL" test rules "$WORK/alerts.test.yaml"

dashboard_json_parses() {
    python3 - "$CHART/dashboards/proxmox-csi.json" "$WORK/on.yaml" <<'PY'
import json, sys, yaml
file_dash = json.load(open(sys.argv[1]))
docs = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
assert cm["metadata"]["labels"].get("grafana_dashboard") == "1", "no grafana_dashboard label"
rendered = json.loads(cm["data"]["proxmox-csi.json"])
assert rendered["uid"] == file_dash["uid"] and len(rendered["panels"]) == len(file_dash["panels"])
driver = next(v for v in rendered["templating"]["list"] if v["name"] == "driver")
print(f"{len(rendered['panels'])} panels, driver variable {driver['query']}")
PY
}
check "dashboard JSON parses (file and rendered ConfigMap)" dashboard_json_parses

names() { python3 "$T/metric_names.py" --source "$ROOT/src/metrics/mod.rs" --external "$T/external-metrics.txt" "$@"; }
check "dashboard and alert expressions name only existing metrics" \
    names --dashboard "$CHART/dashboards/proxmox-csi.json" --rules "$WORK/rules.yaml"
rejects_unknown_metric() {
    printf 'groups:\n- name: t\n  rules:\n  - alert: Typo\n    expr: rate(proxmox_csi_grpc_request_total[5m]) > 0\n' >"$WORK/typo.yaml"
    ! names --rules "$WORK/typo.yaml"
}
check "the metric-name check rejects an unknown metric" rejects_unknown_metric

echo "chart: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
