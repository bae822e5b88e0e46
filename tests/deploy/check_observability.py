#!/usr/bin/env python3
"""Checks deploy/prometheus and deploy/grafana against the server's metric contract.

usage: check_observability.py --repo DIR

Every metric a query names (alerts, dashboard, adapter rules) must be one the server exports,
with labels that family carries; every alert must carry a severity and point at a runbook
section that exists; the dashboard must cover what operators look at (request rate, error rate,
per-stage latency percentiles, sessions, queue depth); the Kubernetes scrape config must keep
the pods and port the Deployment defines. promtool validates syntax and alert behaviour in
separate tests.
"""
import argparse
import json
import os
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract  # noqa: E402

PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "max", "min", "avg",
    "count", "clamp_min", "avg_over_time", "label_values", "up", "on", "ignoring", "group_left",
    "le", "humanize", "topk", "bool", "and", "or", "unless", "offset",
}


def metric_names(expr):
    """cab_* identifiers in a PromQL expression (label names inside {} and by() excluded)."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_selectors = re.sub(r"\{[^}]*\}", "{}", no_strings)
    no_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", no_selectors)
    return set(re.findall(r"\bcab_[a-zA-Z0-9_]+\b", no_groupings))


def family_of(series):
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series[: -len(suffix)] in contract.HISTOGRAMS:
            return series[: -len(suffix)]
    return series


def used_labels(expr):
    """Label names used in selectors and groupings of an expression."""
    labels = set()
    for body in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in body.split(",") if x.strip()}
    return labels


# Labels Prometheus itself or the scrape configs add; always allowed.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "node", "le", "deployment"}


class Checker:
    def __init__(self):
        self.failures, self.passed = [], 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
            print("FAIL:", what)


def check_expr(c, where, expr):
    names = metric_names(expr)
    known = contract.series_names()
    for n in names:
        c.check(n in known, f"{where}: metric {n} is exported by the server")
    allowed = set(TARGET_LABELS)
    for n in names:
        allowed |= contract.LABELS.get(family_of(n), set())
    for label in used_labels(expr):
        c.check(label in allowed, f"{where}: label '{label}' exists on {sorted(names) or 'its metrics'}")
    return names


def runbook_anchors(path):
    anchors = set()
    for line in open(path):
        m = re.match(r"#+\s+(.*)", line)
        if m:
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def check_alerts(c, repo):
    rules = yaml.safe_load(open(os.path.join(repo, "deploy/prometheus/alerts.yml")))
    anchors = runbook_anchors(os.path.join(repo, "docs/runbook.md"))
    count = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert")
            c.check(bool(name), "every rule is an alert")
            count += 1
            check_expr(c, f"alert {name}", rule["expr"])
            c.check(rule.get("labels", {}).get("severity") in ("critical", "warning", "info"),
                    f"alert {name}: severity critical|warning|info")
            ann = rule.get("annotations", {})
            c.check(bool(ann.get("summary")) and bool(ann.get("description")), f"alert {name}: summary and description")
            m = re.fullmatch(r"docs/runbook\.md#(.+)", ann.get("runbook", ""))
            c.check(m is not None and m.group(1) in anchors,
                    f"alert {name}: runbook annotation points at a section of docs/runbook.md")
    c.check(count >= 5, f"at least 5 alerts ({count})")


def check_dashboard(c, repo):
    dash = json.load(open(os.path.join(repo, "deploy/grafana/cab-server-dashboard.json")))
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    c.check(len(ids) == len(set(ids)), "dashboard panel ids are unique")
    c.check(bool(dash.get("uid")) and bool(dash.get("title")), "dashboard has uid and title")
    exprs = []
    for p in panels:
        c.check("gridPos" in p, f"panel {p.get('title')}: gridPos")
        for t in p.get("targets", []):
            exprs.append(t["expr"])
            check_expr(c, f"panel '{p.get('title')}'", t["expr"])
    text = "\n".join(exprs)
    needs = {
        "request rate": r"rate\(cab_requests_total",
        "error rate": r'cab_requests_total\{[^}]*code!',
        "latency percentiles per stage": r"histogram_quantile\([^,]+, sum by \(stage, le\) \(rate\(cab_stage_duration_seconds_bucket",
        "request latency percentiles": r"histogram_quantile\([^,]+, sum by \(method, le\) \(rate\(cab_request_duration_seconds_bucket",
        "sessions": r"cab_active_sessions",
        "session memory": r"cab_session_memory_bytes",
        "queue depth": r"cab_queue_depth",
        "in-flight requests": r"cab_inflight_requests",
    }
    for what, pattern in needs.items():
        c.check(re.search(pattern, text) is not None, f"dashboard shows {what}")
    # Template variables used by queries are defined.
    defined = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    for var in set(re.findall(r"\$([a-z_]+)", text)) - {"__rate_interval"}:
        c.check(var in defined, f"dashboard variable ${var} is defined")


def check_adapter(c, repo):
    rules = yaml.safe_load(open(os.path.join(repo, "deploy/prometheus/adapter-rules.yaml")))["rules"]
    served = set()
    for r in rules:
        check_expr(c, "adapter rule", r["seriesQuery"])
        served.add(r["name"]["as"])
    hpa = yaml.safe_load(open(os.path.join(repo, "deploy/k8s/base/hpa.yaml")))
    for m in hpa["spec"]["metrics"]:
        name = m["pods"]["metric"]["name"]
        c.check(name in served, f"HPA metric {name} is served by the prometheus-adapter rules")


def check_k8s_scrape(c, repo):
    cfg = yaml.safe_load(open(os.path.join(repo, "deploy/prometheus/prometheus-kubernetes.yml")))
    dep = yaml.safe_load(open(os.path.join(repo, "deploy/k8s/base/deployment.yaml")))
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    base = yaml.safe_load(open(os.path.join(repo, "deploy/k8s/base/kustomization.yaml")))
    for entry in base.get("labels", []):
        if entry.get("includeTemplates"):
            pod_labels = {**pod_labels, **entry["pairs"]}
    port_names = {p["name"] for ctr in dep["spec"]["template"]["spec"]["containers"] for p in ctr.get("ports", [])}
    job = cfg["scrape_configs"][0]
    keeps = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    for src, regex in keeps.items():
        meta = src[0]
        if meta.startswith("__meta_kubernetes_pod_label_"):
            key = meta[len("__meta_kubernetes_pod_label_"):]
            values = [v for k, v in pod_labels.items() if re.sub(r"[^a-zA-Z0-9_]", "_", k) == key]
            c.check(any(re.fullmatch(regex, v) for v in values), f"scrape keep {meta}={regex} matches the pod labels")
        elif meta == "__meta_kubernetes_pod_container_port_name":
            c.check(regex in port_names, f"scrape keeps container port '{regex}', which the Deployment names")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    a = ap.parse_args()
    c = Checker()
    check_alerts(c, a.repo)
    check_dashboard(c, a.repo)
    check_adapter(c, a.repo)
    check_k8s_scrape(c, a.repo)
    print(f"{c.passed} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
