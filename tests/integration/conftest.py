"""Fixtures that run real meshd processes for the integration tests.

Every node gets its own temp data dir and API socket, binds to a loopback address with a free
port, and is killed at teardown whatever happened. Waits poll for a condition with a timeout;
nothing sleeps a fixed time and hopes.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FOGMESH_BUILD", os.path.join(ROOT, "build"))
MESHD = os.path.join(BUILD, "meshd", "meshd")
MESHCTL = os.path.join(BUILD, "ctl", "meshctl")


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    """Polls cond() until it returns a truthy value, which is returned; fails after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the condition may raise while the system is settling
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc})" if last_exc else ""))


def free_port(host="127.0.0.1"):
    """A port free for both TCP and UDP on host (meshd uses the same number for both)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind((host, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((host, port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise RuntimeError("no free port")


class Meshd:
    """One meshd process. Use through the `mesh` fixture, which cleans up."""

    def __init__(self, workdir, name, host="127.0.0.1", port=None, args=(), key_file=None):
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self.data_dir = os.path.join(workdir, name)
        self.socket = os.path.join(self.data_dir, "api.sock")
        self.log_path = os.path.join(workdir, name + ".log")
        self.args = list(args)
        self.key_file = key_file
        self.proc = None

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def command(self):
        cmd = [MESHD, "--name", self.name, "--data-dir", self.data_dir,
               "--bind", self.addr, "--log-level", "debug"]
        if self.key_file:
            cmd += ["--key-file", self.key_file]
        return cmd + self.args

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        if wait:
            wait_for(self.ready, timeout=15, what=f"meshd {self.name} to answer on its socket")
        return self

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"meshd {self.name} exited with {self.proc.returncode}:\n"
                                 + self.read_log())
        return self.ctl("status", "-o", "json", check=False).returncode == 0

    def ctl(self, *args, check=True, timeout=30):
        r = subprocess.run([MESHCTL, "--socket", self.socket, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"meshctl {' '.join(args)} on {self.name} failed "
                                 f"({r.returncode}): {r.stderr}")
        return r

    def ctl_json(self, *args):
        return json.loads(self.ctl(*args, "-o", "json").stdout)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops the process and returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"meshd {self.name} ignored {sig!r} for {timeout}s")

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""


class Mesh:
    """The nodes of one test; teardown kills whatever is still running and removes the dirs."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="fogmesh-it-")
        self.nodes = []

    def node(self, name, **kw):
        n = Meshd(self.workdir, name, **kw)
        self.nodes.append(n)
        return n

    def keygen(self, name="mesh.key"):
        path = os.path.join(self.workdir, name)
        key = subprocess.run([MESHCTL, "keygen"], capture_output=True, text=True,
                             check=True).stdout
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, key.encode())
        os.close(fd)
        return path

    def close(self, failed):
        for n in self.nodes:
            if n.proc and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
            if failed:
                print(f"----- log of {n.name} -----\n{n.read_log()[-6000:]}")
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def mesh(request):
    m = Mesh()
    yield m
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    m.close(failed)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
