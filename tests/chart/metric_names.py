#!/usr/bin/env python3
"""Check that every PromQL expression of the chart names only metrics that exist.

A metric the driver does not export (a typo, a renamed metric) makes an alert that
never fires and a dashboard panel that stays empty, and neither Prometheus nor
Grafana complains. So the names are taken from the driver's source
(src/metrics/mod.rs: each `Opts::new("...")` / `HistogramOpts::new("...")`, a
histogram also as _bucket, _sum and _count) plus tests/chart/external-metrics.txt
(kube-state-metrics and kubelet metrics, each with its source), and every
expression of the given Grafana dashboards (JSON) and Prometheus rule files
(YAML, `groups:`) must use only those.

Usage: metric_names.py --source src/metrics/mod.rs --external FILE
                       [--dashboard FILE ...] [--rules FILE ...]
Exit code 1 and one line per unknown name when any is found.
"""

import argparse
import json
import re
import sys

import yaml

# Words of PromQL that look like identifiers but are not metric names.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan", "atan2", "start", "end",
}


def driver_metrics(source_path):
    text = open(source_path, encoding="utf-8").read()
    names = set()
    for kind, name in re.findall(r'\b(Histogram)?Opts::new\(\s*"([A-Za-z_:][A-Za-z0-9_:]*)"', text):
        names.add(name)
        if kind:
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
    return names


def external_metrics(path):
    names = set()
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line)
    return names


def metric_names(expr):
    """The metric names an expression selects (a lexical pass, enough for our rules)."""
    e = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    e = re.sub(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`", '""', e)
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery windows
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = []
    for m in re.finditer(r"(\d[\w.]*)|([A-Za-z_:][\w:]*)", e):
        word = m.group(2)
        if not word or word.lower() in KEYWORDS:
            continue
        rest = e[m.end():].lstrip()
        if rest.startswith("("):  # a function or an aggregation
            continue
        names.append(word)
    return names


def dashboard_exprs(path):
    dash = json.load(open(path, encoding="utf-8"))
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title", where)
            if isinstance(node.get("expr"), str):
                found.append((f"{path}: panel {title!r}", node["expr"]))
            for v in node.values():
                walk(v, title)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    walk(dash.get("panels", []), "")
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if var.get("type") == "query" and isinstance(q, str):
            for m in re.finditer(r"label_values\(\s*([^,)]+)", q):
                found.append((f"{path}: variable {var.get('name')!r}", m.group(1)))
    return found


def rule_exprs(path):
    doc = yaml.safe_load(open(path, encoding="utf-8"))
    found = []
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            found.append((f"{path}: rule {name}", rule["expr"]))
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--external", required=True)
    ap.add_argument("--dashboard", action="append", default=[])
    ap.add_argument("--rules", action="append", default=[])
    args = ap.parse_args()

    known = driver_metrics(args.source)
    if not known:
        print(f"no metric definitions found in {args.source}", file=sys.stderr)
        return 1
    known |= external_metrics(args.external)

    exprs = []
    for d in args.dashboard:
        exprs += dashboard_exprs(d)
    for r in args.rules:
        exprs += rule_exprs(r)
    if not exprs:
        print("no expressions found", file=sys.stderr)
        return 1

    bad = 0
    used = set()
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            print(f"{where}: no metric in {expr!r}")
            bad += 1
        for n in names:
            used.add(n)
            if n not in known:
                print(f"{where}: unknown metric {n}")
                bad += 1
    print(f"{len(exprs)} expressions, {len(used)} metric names: {', '.join(sorted(used))}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
