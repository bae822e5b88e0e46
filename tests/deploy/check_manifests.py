#!/usr/bin/env python3
"""Renders a kustomize overlay of deploy/k8s and checks the objects against the server's contract.

usage: check_manifests.py --overlay DIR --flavor cpu|gpu [--kubectl PATH] [--dockerfile PATH]

Checks what a cluster would only reveal at rollout time: probes on the real health service and
the container's gRPC port, Service/PodMonitor/NetworkPolicy ports that resolve to container
ports, the grace period against the drain flag, resources, the security context, the HPA metric
among the server's metrics, the GPU request in the gpu overlay only, and the ConfigMap's keys
among the server's flags. Prints one line per check and exits 1 if any failed.
"""
import argparse
import os
import re
import subprocess
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract  # noqa: E402


class Checker:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
            print("FAIL:", what)
        return ok


def render(kubectl, overlay):
    out = subprocess.run([kubectl, "kustomize", overlay], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def one(c, objs, kind, pred=lambda o: True, what=None):
    found = [o for o in by_kind(objs, kind) if pred(o)]
    c.check(len(found) == 1, f"exactly one {what or kind} (found {len(found)})")
    return found[0] if found else {}


def selects(selector, labels):
    """True when a label selector (matchLabels form or plain map) picks pods with `labels`."""
    match = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    if "matchExpressions" in (selector or {}):
        return False  # not used here; a checker that ignores them would be wrong
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def host_port(value):
    m = re.fullmatch(r"(.*):(\d+)", value or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


def cpu_quantity(q):
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def mem_quantity(q):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    return float(m.group(1)) * units.get(m.group(2), 1) if m else -1


def check_common(c, objs):
    namespaces = {o.get("metadata", {}).get("namespace") for o in objs}
    c.check(len(namespaces) == 1 and None not in namespaces,
            f"every object in one namespace set by the overlay (saw {namespaces})")
    for o in objs:
        name = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        c.check(bool(o.get("apiVersion")) and bool(o.get("kind")) and bool(o.get("metadata", {}).get("name")),
                f"{name}: apiVersion, kind, metadata.name")
        c.check(o.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/name") == "cab-server",
                f"{name}: label app.kubernetes.io/name=cab-server")


def check_configmap(c, cm):
    data = cm.get("data", {})
    for key, value in data.items():
        c.check(key in contract.ENV_FLAGS, f"ConfigMap key {key} is a cab-server flag (CAB_<FLAG>)")
        c.check(isinstance(value, str), f"ConfigMap {key} is a string")
    for key in ("CAB_LISTEN", "CAB_METRICS_LISTEN", "CAB_DRAIN_GRACE_S", "CAB_BACKEND"):
        c.check(key in data, f"ConfigMap sets {key}")
    c.check(data.get("CAB_BACKEND") in contract.BACKENDS, f"CAB_BACKEND in {contract.BACKENDS}")
    for key in ("CAB_LISTEN", "CAB_METRICS_LISTEN"):
        host, port = host_port(data.get(key))
        c.check(host in ("0.0.0.0", "[::]"), f"{key} listens on all interfaces (a pod IP, not loopback)")
        c.check(port is not None and port > 0, f"{key} has a fixed port")
    return data


def container_of(dep):
    cs = dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return next((x for x in cs if x.get("name") == "cab-server"), {})


def check_deployment(c, dep, cm, flavor):
    spec = dep.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    data = cm.get("data", {})
    c.check(selects(spec.get("selector", {}), labels), "Deployment selector matches its pod labels")
    ctr = container_of(dep)
    c.check(bool(ctr), "Deployment has container cab-server")
    image = ctr.get("image", "")
    c.check(":" in image and "/" in image, f"image is a registry path with a tag ({image})")
    c.check(f"cab-server-{flavor}" in image, f"{flavor} overlay uses the {flavor} image ({image})")
    refs = [e.get("configMapRef", {}).get("name") for e in ctr.get("envFrom", [])]
    c.check(cm.get("metadata", {}).get("name") in refs, "container takes its flags from the ConfigMap (envFrom)")
    c.check("args" not in ctr and "command" not in ctr,
            "container keeps the image's entrypoint (flags come from the environment only)")

    ports = {p.get("name"): p for p in ctr.get("ports", [])}
    grpc_port = ports.get("grpc", {}).get("containerPort")
    metrics_port = ports.get("metrics", {}).get("containerPort")
    c.check(grpc_port == host_port(data.get("CAB_LISTEN"))[1], "containerPort grpc == CAB_LISTEN port")
    c.check(metrics_port == host_port(data.get("CAB_METRICS_LISTEN"))[1],
            "containerPort metrics == CAB_METRICS_LISTEN port")

    # Probes: native gRPC on the real health service names and the gRPC port.
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = ctr.get(kind, {})
        g = probe.get("grpc")
        c.check(g is not None, f"{kind} is a native gRPC probe")
        if g is None:
            continue
        c.check(g.get("port") == grpc_port, f"{kind} port {g.get('port')} is the grpc containerPort {grpc_port}")
        c.check(g.get("service", "") in contract.HEALTH_SERVICES,
                f"{kind} service '{g.get('service', '')}' is one the server registers")
    ready = ctr.get("readinessProbe", {}).get("grpc", {})
    c.check(ready.get("service") == contract.SERVICE_NAME,
            "readinessProbe asks for cab.v1.MaskPredictor (NOT_SERVING while draining)")

    # Drain: preStop pause + drain grace must fit in the termination grace period, and liveness
    # must not kill a draining server.
    drain = float(data.get("CAB_DRAIN_GRACE_S", "10"))
    pre = ctr.get("lifecycle", {}).get("preStop", {})
    pause = 0.0
    if "sleep" in pre:
        pause = float(pre["sleep"].get("seconds", 0))
    elif "exec" in pre:
        cmd = pre["exec"].get("command", [])
        c.check(len(cmd) == 2 and cmd[0].endswith("sleep"), f"preStop exec is a sleep ({cmd})")
        pause = float(cmd[-1]) if cmd else 0.0
    c.check(pause > 0, "preStop pauses so endpoints drop the pod before SIGTERM")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    c.check(grace > pause + drain,
            f"terminationGracePeriodSeconds {grace} > preStop {pause} + CAB_DRAIN_GRACE_S {drain}")
    live = ctr.get("livenessProbe", {})
    window = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    c.check(window > drain, f"liveness failure window {window}s > drain grace {drain}s")

    # Resources.
    res = ctr.get("resources", {})
    req, lim = res.get("requests", {}), res.get("limits", {})
    for r in ("cpu", "memory"):
        c.check(r in req and r in lim, f"resources.requests and limits set {r}")
    if "cpu" in req and "cpu" in lim:
        c.check(cpu_quantity(req["cpu"]) <= cpu_quantity(lim["cpu"]), "cpu request <= limit")
    if "memory" in req and "memory" in lim:
        c.check(mem_quantity(req["memory"]) <= mem_quantity(lim["memory"]), "memory request <= limit")
        total = float(data.get("CAB_MAX_TOTAL_BYTES", "0"))
        c.check(total < mem_quantity(lim["memory"]),
                "CAB_MAX_TOTAL_BYTES (session state) below the memory limit")
    gpus = str(lim.get("nvidia.com/gpu", "0"))
    if flavor == "gpu":
        c.check(int(gpus) >= 1, "gpu overlay: limits nvidia.com/gpu >= 1")
        c.check(str(req.get("nvidia.com/gpu", gpus)) == gpus, "gpu overlay: GPU request == limit")
        c.check(data.get("CAB_BACKEND") in ("cuda", "auto"), "gpu overlay: backend cuda or auto")
    else:
        c.check("nvidia.com/gpu" not in str(dep), "cpu overlay: no nvidia.com/gpu anywhere")
        c.check(data.get("CAB_BACKEND") == "cpu", "cpu overlay: backend cpu")

    # Security context: pod and container.
    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "runAsNonRoot")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    c.check(uid is not None and uid != 0, f"runAsUser is a non-root uid ({uid})")
    c.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    c.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem: true")
    c.check(csc.get("privileged") in (None, False), "not privileged")
    c.check("ALL" in csc.get("capabilities", {}).get("drop", []), "capabilities drop ALL")
    c.check(not csc.get("capabilities", {}).get("add"), "no capabilities added")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
    c.check(seccomp.get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault")
    c.check(pod.get("automountServiceAccountToken") is False, "no service account token mounted")
    c.check(not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"),
            "no host namespaces")
    return labels, ports, uid


def resolve(port, ports):
    """A Service/NetworkPolicy port reference (name or number) -> the container port, or None."""
    if isinstance(port, str):
        return ports.get(port, {}).get("containerPort")
    return port if port in {p.get("containerPort") for p in ports.values()} else None


def check_services(c, objs, labels, ports):
    svcs = by_kind(objs, "Service")
    cluster = [s for s in svcs if s["spec"].get("clusterIP") != "None"]
    headless = [s for s in svcs if s["spec"].get("clusterIP") == "None"]
    c.check(len(cluster) == 1 and cluster[0]["spec"].get("type", "ClusterIP") == "ClusterIP",
            "one ClusterIP Service")
    c.check(len(headless) == 1, "one headless Service (clusterIP: None) for client-side balancing")
    for s in svcs:
        name = s["metadata"]["name"]
        c.check(selects(s["spec"].get("selector", {}), labels), f"Service {name} selects the pods")
        sp = {p.get("name"): p for p in s["spec"].get("ports", [])}
        c.check("grpc" in sp, f"Service {name} has a port named grpc")
        for pname, p in sp.items():
            target = resolve(p.get("targetPort", p.get("port")), ports)
            c.check(target is not None and target == ports.get(pname, {}).get("containerPort"),
                    f"Service {name} port {pname} reaches containerPort {pname}")
    if headless:
        c.check(headless[0]["spec"].get("publishNotReadyAddresses") in (None, False),
                "headless Service leaves out not-ready (draining) pods")


def check_monitor(c, objs, labels, ports):
    mons = by_kind(objs, "PodMonitor") + by_kind(objs, "ServiceMonitor")
    c.check(len(mons) >= 1, "a PodMonitor or ServiceMonitor exists")
    for m in by_kind(objs, "PodMonitor"):
        c.check(selects(m["spec"].get("selector", {}), labels), "PodMonitor selects the pods")
        for ep in m["spec"].get("podMetricsEndpoints", []):
            c.check(ep.get("port") == "metrics" and "metrics" in ports, "PodMonitor scrapes the metrics port")
            c.check(ep.get("path", "/metrics") == "/metrics", "PodMonitor path /metrics")


def check_hpa(c, hpa, dep):
    spec = hpa.get("spec", {})
    ref = spec.get("scaleTargetRef", {})
    c.check(ref.get("kind") == "Deployment" and ref.get("name") == dep.get("metadata", {}).get("name"),
            "HPA scales the Deployment")
    c.check(hpa.get("apiVersion") == "autoscaling/v2", "HPA is autoscaling/v2")
    mins, maxs = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
    c.check(2 <= mins <= maxs, f"HPA 2 <= minReplicas ({mins}) <= maxReplicas ({maxs})")
    metrics = spec.get("metrics", [])
    c.check(len(metrics) >= 1, "HPA has a metric")
    for m in metrics:
        c.check(m.get("type") == "Pods", "HPA metric type Pods (a per-pod custom metric)")
        name = m.get("pods", {}).get("metric", {}).get("name")
        c.check(name in contract.SCALING_GAUGES, f"HPA metric {name} is a load gauge the server exports")
        target = m.get("pods", {}).get("target", {})
        c.check(target.get("type") == "AverageValue" and "averageValue" in target, "HPA target AverageValue")
    return mins


def check_pdb(c, pdb, labels, min_replicas):
    spec = pdb.get("spec", {})
    c.check(selects(spec.get("selector", {}), labels), "PodDisruptionBudget selects the pods")
    if "minAvailable" in spec:
        c.check(int(spec["minAvailable"]) < min_replicas, "PDB minAvailable leaves a drain possible")
    else:
        c.check(int(str(spec.get("maxUnavailable", 0)).rstrip("%")) >= 1, "PDB maxUnavailable >= 1")


def check_netpol(c, np, labels, ports):
    spec = np.get("spec", {})
    c.check(selects(spec.get("podSelector", {}), labels), "NetworkPolicy selects the pods")
    c.check("Ingress" in spec.get("policyTypes", []), "NetworkPolicy restricts ingress")
    allowed = set()
    for rule in spec.get("ingress", []):
        c.check(bool(rule.get("from")), "every ingress rule names its sources")
        for p in rule.get("ports", []):
            target = resolve(p.get("port"), ports)
            c.check(target is not None, f"NetworkPolicy ingress port {p.get('port')} is a container port")
            allowed.add(target)
    for name in ("grpc", "metrics"):
        c.check(ports.get(name, {}).get("containerPort") in allowed, f"NetworkPolicy admits the {name} port")
    if "Egress" in spec.get("policyTypes", []):
        dns = [p for r in spec.get("egress", []) for p in r.get("ports", []) if p.get("port") == 53]
        c.check(len(dns) >= 1, "egress allows DNS")
        for r in spec.get("egress", []):
            for peer in r.get("to", []):
                sel = peer.get("podSelector", {}).get("matchLabels", {})
                c.check("app.kubernetes.io/name" not in sel, "egress peers are not rewritten to our own labels")


def check_dockerfile(c, path, uid, ports):
    text = open(path).read()
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    c.check(bool(user) and user[-1].split(":")[0] == str(uid),
            f"{os.path.basename(path)}: final USER {user[-1] if user else None} is runAsUser {uid}")
    entry = re.findall(r"^ENTRYPOINT\s+(.*)$", text, re.M)
    c.check(bool(entry) and "cab-server" in entry[-1], f"{os.path.basename(path)}: ENTRYPOINT is cab-server")
    c.check(re.search(r"^HEALTHCHECK .*cab-health-probe", text, re.M | re.S) is not None,
            f"{os.path.basename(path)}: HEALTHCHECK runs cab-health-probe")
    exposed = {int(p.split("/")[0]) for line in re.findall(r"^EXPOSE\s+(.*)$", text, re.M) for p in line.split()}
    for name in ("grpc", "metrics"):
        c.check(ports.get(name, {}).get("containerPort") in exposed,
                f"{os.path.basename(path)}: EXPOSE the {name} port")
    c.check(len(re.findall(r"^FROM\s", text, re.M)) >= 2, f"{os.path.basename(path)}: multi-stage build")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--overlay", required=True)
    ap.add_argument("--flavor", choices=("cpu", "gpu"), required=True)
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--dockerfile")
    ap.add_argument("--expect-fail", action="append", default=[],
                    help="checker self-test: succeed only if a failure containing this text is reported")
    a = ap.parse_args()

    objs = render(a.kubectl, a.overlay)
    print(f"rendered {a.overlay}: {len(objs)} objects: " + ", ".join(sorted(o['kind'] for o in objs)))
    c = Checker()
    check_common(c, objs)
    for kind in ("ServiceAccount", "ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                 "PodDisruptionBudget", "NetworkPolicy"):
        c.check(len(by_kind(objs, kind)) == 1, f"exactly one {kind}")
    cm = one(c, objs, "ConfigMap")
    dep = one(c, objs, "Deployment")
    check_configmap(c, cm)
    labels, ports, uid = check_deployment(c, dep, cm, a.flavor)
    check_services(c, objs, labels, ports)
    check_monitor(c, objs, labels, ports)
    mins = check_hpa(c, one(c, objs, "HorizontalPodAutoscaler"), dep)
    check_pdb(c, one(c, objs, "PodDisruptionBudget"), labels, mins)
    check_netpol(c, one(c, objs, "NetworkPolicy"), labels, ports)
    if a.dockerfile:
        check_dockerfile(c, a.dockerfile, uid, ports)
    print(f"{c.passed} passed, {len(c.failures)} failed")
    if a.expect_fail:
        missed = [e for e in a.expect_fail if not any(e in f for f in c.failures)]
        for e in missed:
            print("MISSED: the checker did not report", repr(e))
        print(f"self-test: {len(a.expect_fail) - len(missed)} of {len(a.expect_fail)} planted mistakes reported")
        return 1 if missed else 0
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
