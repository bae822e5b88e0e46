#!/usr/bin/env python3
"""Starts cab-server the way the image and the rendered manifests would, and probes it.

usage: run_from_configmap.py --overlay DIR --dockerfile FILE --bin DIR [--kubectl PATH]
                             [--expect serving|exit1]

The environment is the Dockerfile's ENV, then the rendered ConfigMap (envFrom), then the
container's own env, as the kubelet layers them; the command is the image's ENTRYPOINT with the
container's args (none), found in --bin instead of /opt/cab/bin. Only the listen addresses
change: the host becomes 127.0.0.1 and the ports free loopback ports, so the test binds nothing
outside this machine.

--expect serving: both health names answer SERVING through cab-health-probe, /metrics exports
  every metric family of the contract (the HPA's among them) and cab_build_info names the
  ConfigMap's backend; after SIGTERM health no longer answers SERVING and the process exits 0
  within the drain grace period.
--expect exit1: the configuration must be refused at start (the gpu overlay's CAB_BACKEND=cuda on
  a machine without a GPU): exit code 1 with a message that names the backend.
"""
import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cabproc  # noqa: E402
import contract  # noqa: E402


def dockerfile_runtime(path):
    """(ENV dict, ENTRYPOINT list) of the Dockerfile's last stage."""
    text = re.sub(r"\\\n", " ", open(path).read())
    last = text.split("\nFROM ")[-1]
    env = {}
    for line in re.findall(r"^ENV\s+(.*)$", last, re.M):
        for item in shlex.split(line):
            if "=" in item:
                k, v = item.split("=", 1)
                env[k] = v
    entry = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", last, re.M)
    return env, yaml.safe_load(entry[-1]) if entry else []


def rendered(kubectl, overlay):
    out = subprocess.run([kubectl, "kustomize", overlay], check=True, capture_output=True, text=True).stdout
    objs = [o for o in yaml.safe_load_all(out) if o]
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    dep = next(o for o in objs if o["kind"] == "Deployment")
    ctr = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "cab-server")
    return cm, ctr


def server_flags(exe):
    """Flag names cab-server links in (from --helpfull)."""
    out = subprocess.run([exe, "--helpfull"], capture_output=True, text=True)
    return set(re.findall(r"^\s+--([a-z_0-9]+) ", out.stdout + out.stderr, re.M))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--overlay", required=True)
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--bin", required=True, help="build dir holding cab-server and cab-health-probe")
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--expect", choices=("serving", "exit1"), default="serving")
    a = ap.parse_args()

    failures = []

    def check(ok, what):
        print(("ok:   " if ok else "FAIL: ") + what)
        if not ok:
            failures.append(what)
        return ok

    image_env, entrypoint = dockerfile_runtime(a.dockerfile)
    cm, ctr = rendered(a.kubectl, a.overlay)
    check(bool(entrypoint) and os.path.basename(entrypoint[0]) == "cab-server",
          f"image ENTRYPOINT is cab-server ({entrypoint})")
    exe = os.path.join(a.bin, "cab-server")
    probe_exe = os.path.join(a.bin, "cab-health-probe")
    argv = [exe] + entrypoint[1:] + ctr.get("args", [])

    flags = server_flags(exe)
    for key in cm["data"]:
        name = contract.ENV_FLAGS.get(key)
        check(name is not None and name in flags, f"ConfigMap {key} is a flag cab-server has (--{name})")

    # Layer the environment as the container runtime and the kubelet would.
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    env.update(image_env)
    env.update(cm["data"])
    for e in ctr.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    grpc_port, metrics_port = cabproc.free_port(), cabproc.free_port()
    orig = (env["CAB_LISTEN"], env["CAB_METRICS_LISTEN"])
    env["CAB_LISTEN"] = f"127.0.0.1:{grpc_port}"
    env["CAB_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
    shown = {k: v for k, v in sorted(env.items()) if k.startswith("CAB_")}
    print(f"environment (listen addresses were {orig}):")
    for k, v in shown.items():
        print(f"  {k}={v}")
    print("command:", " ".join(argv))

    if a.expect == "exit1" and os.path.exists("/dev/nvidia0"):
        print("SKIP: this machine has a GPU; the gpu overlay's configuration would start here")
        return 77
    work = tempfile.mkdtemp(prefix="cab-deploy-")
    server = cabproc.Server(argv[0], env, os.path.join(work, "server.log"), argv[1:])
    server.start()
    try:
        if a.expect == "exit1":
            code = server.wait(30)
            log = server.log_text()
            check(code == 1, f"cab-server refuses the configuration with exit code 1 (got {code})")
            check("cuda" in log.lower(), "its message names the cuda backend")
            print("server said:", log.strip()[-600:])
            return finish(failures)

        up = cabproc.probe(probe_exe, grpc_port, "", wait_s=30) == 0
        check(up, "cab-health-probe: service '' SERVING")
        if not up:
            print(server.log_text()[-3000:])
            return finish(failures)
        check(cabproc.probe(probe_exe, grpc_port, contract.SERVICE_NAME) == 0,
              f"cab-health-probe: service '{contract.SERVICE_NAME}' SERVING")
        check(cabproc.probe(probe_exe, grpc_port, "no.such.Service") != 0, "an unknown service is not SERVING")

        text = cabproc.scrape(metrics_port)
        check(text is not None, f"/metrics answers on the metrics port")
        families = cabproc.metric_families(text)
        for fam in contract.COUNTERS + contract.HISTOGRAMS + contract.GAUGES:
            # prometheus-cpp writes counters' TYPE line without the _total suffix in some versions
            check(fam in families or fam.removesuffix("_total") in families, f"/metrics exports {fam}")
        parsed = cabproc.parse_metrics(text)
        backend = env["CAB_BACKEND"]
        check(cabproc.sum_metric(parsed, "cab_build_info", backend=backend) == 1,
              f"cab_build_info{{backend=\"{backend}\"}} == 1")

        # SIGTERM: readiness must flip to NOT_SERVING and the process must exit 0 within the
        # drain grace period (nothing is in flight, so it should be quick).
        drain = float(env.get("CAB_DRAIN_GRACE_S", "10"))
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        after = cabproc.probe(probe_exe, grpc_port, contract.SERVICE_NAME, timeout_s=1)
        check(after != 0, f"after SIGTERM readiness is not SERVING (probe exit {after}: "
                          "4 NOT_SERVING, 2/3 already closed)")
        code = server.wait(drain + 5)
        elapsed = time.monotonic() - t0
        check(code == 0, f"SIGTERM: exit code 0 (got {code}) after {elapsed:.1f}s, drain grace {drain}s")
        check(code is not None and elapsed <= drain + 2, "exit within the drain grace period")
        log = server.log_text()
        print("server log (tail):")
        print("  " + "\n  ".join(log.strip().splitlines()[-15:]))
        return finish(failures)
    finally:
        server.stop()


def finish(failures):
    print(f"{'FAILED' if failures else 'PASSED'}: {len(failures)} failed check(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
