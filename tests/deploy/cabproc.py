"""Helpers for the deploy tests that run real cab-server processes on loopback.

Every process started here is tracked by its pid and stopped by its pid at the end; nothing is
ever killed by name. Servers listen on 127.0.0.1 only.
"""
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request


def free_port():
    """A loopback port nothing listens on right now (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, timeout=5):
    """The /metrics text of a server, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            return r.read().decode()
    except OSError:
        return None


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} from Prometheus text format."""
    out = {}
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


def metric_families(text):
    """Names declared by # TYPE lines."""
    return set(re.findall(r"^# TYPE (\S+) ", text or "", re.M))


def sum_metric(parsed, name, **labels):
    return sum(v for (n, ls), v in parsed.items()
               if n == name and all(dict(ls).get(k) == val for k, val in labels.items()))


class Server:
    """One cab-server process with its own environment and log file."""

    def __init__(self, exe, env, log_path, args=()):
        self.exe, self.env, self.log_path, self.args = exe, env, log_path, list(args)
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.exe] + self.args, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, cwd=os.path.dirname(self.log_path))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Exit code, or None if still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """SIGTERM, then SIGKILL if it lingers; always reaps."""
        if self.alive():
            self.signal(signal.SIGTERM)
            if self.wait(20) is None:
                self.signal(signal.SIGKILL)
                self.wait(10)
        if self.log:
            self.log.close()
            self.log = None

    def log_text(self):
        try:
            return open(self.log_path, errors="replace").read()
        except OSError:
            return ""


def probe(probe_exe, port, service="", wait_s=0.0, timeout_s=2.0):
    """Exit code of cab-health-probe against 127.0.0.1:port (0 = SERVING)."""
    cmd = [probe_exe, f"--addr=127.0.0.1:{port}", f"--service={service}",
           f"--wait_s={wait_s}", f"--timeout_s={timeout_s}"]
    return subprocess.run(cmd, capture_output=True, text=True).returncode


def wait_for(pred, timeout, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
