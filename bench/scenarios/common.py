"""What scenarios share: starting meshd and serf, temp dirs, free ports, timing, medians."""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time


def free_port(host="127.0.0.1"):
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind((host, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def wait_until(cond, timeout, interval=0.001):
    """Polls cond() until true; returns the monotonic time it became true, or raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def unix_http_ok(path, request=b"GET /v1/status HTTP/1.0\r\n\r\n"):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(path)
        s.sendall(request)
        data = s.recv(64)
        s.close()
        return data.startswith(b"HTTP/1.") and b" 200 " in data
    except OSError:
        return False


def tcp_accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Context:
    def __init__(self, build, runs):
        self.build = build
        self.runs = runs
        self.meshd = os.path.join(build, "meshd", "meshd")
        self.meshctl = os.path.join(build, "ctl", "meshctl")
        self.procs = []
        self.dirs = []
        if not os.access(self.meshd, os.X_OK):
            raise SystemExit(f"bench: no meshd at {self.meshd}; build first (ninja -C build)")

    def version(self):
        r = subprocess.run([self.meshd, "--version"], capture_output=True, text=True)
        return r.stdout.split()[-1] if r.returncode == 0 else "?"

    def tempdir(self):
        d = tempfile.mkdtemp(prefix="fogmesh-bench-")
        self.dirs.append(d)
        return d

    def spawn(self, cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs = []


def row(sc, metric, system, value, unit, baseline=None):
    r = {"metric": metric, "system": system, "value": value, "unit": unit,
         "ratio": (value / baseline) if baseline else None}
    sc["rows"].append(r)
    return r
