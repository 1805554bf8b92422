"""Fixtures that run real meshd processes for the integration tests.

Every node gets its own temp data dir and API socket, binds to a loopback address with a free
port (or to an address inside a network namespace the test made), and is stopped at teardown
whatever happened. Waits poll for a condition with a timeout; nothing sleeps a fixed time and
hopes.

At teardown the nodes still running get SIGTERM (so that a sanitizer build reports leaks at
exit), then SIGKILL if they linger, and every node's log is scanned for sanitizer reports: a
report fails the test even when its assertions passed.
"""

import json
import os
import re
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

# The default timeout of waits for the mesh to do something (join, detect, heal). Generous so
# that a sanitizer build on a loaded 2-core CI machine passes; a healthy mesh takes seconds.
TIMEOUT = float(os.environ.get("FOGMESH_IT_TIMEOUT", "30"))

SANITIZER_PATTERNS = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
    r"SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer")

STATUSES = ("alive", "suspect", "dead", "left")


class Fatal(AssertionError):
    """Raised by a wait_for condition to fail the wait at once (e.g. the process died)."""


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    """Polls cond() until it returns a truthy value, which is returned; fails after timeout.
    An exception from cond() counts as "not yet", except Fatal, which fails at once."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Fatal:
            raise
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
    """One meshd process. Use through the `mesh` fixture, which cleans up.

    netns: run inside this network namespace (`ip netns exec`); the API socket is a file, so
    meshctl reaches it from anywhere. join: addresses for --join. labels: {key: value}."""

    def __init__(self, workdir, name, host="127.0.0.1", port=None, args=(), key_file=None,
                 join=(), labels=None, netns=None, data_dir=None):
        self.name = name
        self.host = host
        self.netns = netns
        # Inside a namespace of our own nothing else binds: the default port is fine.
        self.port = port or (7946 if netns else free_port(host))
        self.data_dir = data_dir or os.path.join(workdir, name)
        self.socket = os.path.join(self.data_dir, "api.sock")
        self.log_path = os.path.join(workdir, os.path.basename(self.data_dir) + ".log")
        self.args = list(args)
        self.key_file = key_file
        self.join = list(join)
        self.labels = dict(labels or {})
        self.proc = None
        self.log = None

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def command(self):
        cmd = [MESHD, "--name", self.name, "--data-dir", self.data_dir,
               "--bind", self.addr, "--log-level", "debug"]
        if self.key_file:
            cmd += ["--key-file", self.key_file]
        for j in self.join:
            cmd += ["--join", j]
        for k, v in self.labels.items():
            cmd += ["--label", f"{k}={v}"]
        cmd += self.args
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd

    def start(self, wait=True):
        if self.log:
            self.log.close()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        if wait:
            wait_for(self.ready, timeout=TIMEOUT, what=f"meshd {self.name} to answer on its socket")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self):
        if self.proc.poll() is not None:
            raise Fatal(f"meshd {self.name} exited with {self.proc.returncode}:\n"
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

    # ---- views of the mesh from this node ----

    def status(self):
        return self.ctl_json("status")

    def node_id(self):
        return self.status()["node"]["id"]

    def members(self):
        """`meshctl members -o json`: the list of members this node knows."""
        return self.ctl_json("members")

    def members_by_name(self):
        return members_by_name(self)

    # ---- process control ----

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=TIMEOUT):
        """Waits for the process to exit by itself and returns its exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"meshd {self.name} still running after {timeout}s")

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

    def sanitizer_report(self):
        log = self.read_log()
        m = SANITIZER_PATTERNS.search(log)
        if not m:
            return None
        start = max(0, log.rfind("\n", 0, max(0, m.start() - 2000)))
        return log[start:m.start() + 4000]


def members_by_name(node):
    """{name: member} as `node` lists them (`meshctl members -o json`)."""
    return {m["name"]: m for m in node.members()}


def views(observers):
    """{observer name: {member name: member}} for each observer, read now."""
    return {o.name: members_by_name(o) for o in observers}


def summarize(vs):
    """A compact picture of views for failure messages: observer -> member:status."""
    return "\n".join(f"  {o}: " + " ".join(f"{n}={m['status']}" for n, m in sorted(v.items()))
                     for o, v in sorted(vs.items()))


def wait_views(observers, cond, timeout=TIMEOUT, what="the mesh to agree", forbid=None,
               interval=0.05):
    """Polls every observer's member list until cond(views) is true; returns the views.

    forbid(views) may return a message: the wait then fails at once (something that must never
    happen while waiting, e.g. a healthy node reported dead). An observer whose process died
    fails the wait at once too."""
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        for o in observers:
            if o.proc is not None and o.proc.poll() is not None:
                raise AssertionError(f"meshd {o.name} exited with {o.proc.returncode} while "
                                     f"waiting for {what}:\n{o.read_log()[-3000:]}")
        try:
            last = views(observers)
            last_exc = None
        except (AssertionError, ValueError, subprocess.TimeoutExpired) as e:
            last_exc = e
        if last is not None and last_exc is None:
            if forbid:
                msg = forbid(last)
                if msg:
                    raise AssertionError(f"{msg} while waiting for {what}:\n{summarize(last)}")
            if cond(last):
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n"
                                 + (summarize(last) if last else "(no views)")
                                 + (f"\nlast error: {last_exc}" if last_exc else ""))
        time.sleep(interval)


def expect_statuses(expected):
    """A cond for wait_views: every observer lists exactly the names of expected, each with
    the expected status. expected: {name: status}."""
    def cond(vs):
        return all(set(v) == set(expected) and
                   all(v[n]["status"] == s for n, s in expected.items())
                   for v in vs.values())
    return cond


def forbid_statuses(names, bad=("dead", "left"), observers=None):
    """A forbid for wait_views: none of names is ever reported with a status in bad (by the
    given observers, default all)."""
    names = set(names)

    def forbid(vs):
        for o, v in vs.items():
            if observers is not None and o not in observers:
                continue
            for n in names:
                if n in v and v[n]["status"] in bad:
                    return f"{o} reports {n} {v[n]['status']}"
        return None
    return forbid


class Mesh:
    """The nodes of one test; teardown stops whatever is still running and removes the dirs."""

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

    @staticmethod
    def read_key(path):
        with open(path) as f:
            return f.read().strip()

    def start_cluster(self, n, prefix="n", key_file=None, chain=False, labels=None,
                      timeout=TIMEOUT, **kw):
        """Starts n nodes named prefix0..prefix{n-1} with one mesh key (made if not given):
        the first starts the mesh, each other joins the first (or, with chain, the previous
        one). Returns the nodes once every node lists all n alive. labels: {name: {k: v}}."""
        if key_file is None:
            key_file = self.keygen(f"{prefix}-mesh.key")
        self.key_file = key_file
        labels = labels or {}
        nodes = []
        for i in range(n):
            name = f"{prefix}{i}"
            join = () if i == 0 else ((nodes[-1] if chain else nodes[0]).addr,)
            nodes.append(self.node(name, key_file=key_file, join=join,
                                   labels=labels.get(name), **kw).start())
        self.wait_all_alive(nodes, timeout=timeout)
        return nodes

    def wait_all_alive(self, nodes, timeout=TIMEOUT, what=None):
        return wait_views(nodes, expect_statuses({x.name: "alive" for x in nodes}),
                          timeout=timeout,
                          what=what or f"all of {[x.name for x in nodes]} to list all alive")

    def close(self, failed):
        # SIGTERM first (a sanitizer build reports leaks only at a normal exit); a node whose
        # graceful leave is slow gets a second SIGTERM (stop now), then SIGKILL.
        live = [n for n in self.nodes if n.running()]
        for n in live:
            n.proc.send_signal(signal.SIGTERM)
        for sig, grace in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 8.0)):
            deadline = time.monotonic() + grace
            for n in live:
                try:
                    n.proc.wait(timeout=max(0.01, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            live = [n for n in live if n.running()]
            for n in live:
                n.proc.send_signal(sig)
        for n in live:
            n.proc.wait()
        reports = []
        for n in self.nodes:
            if n.log:
                n.log.close()
            rep = n.sanitizer_report()
            if rep:
                reports.append(f"----- sanitizer report in the log of {n.name} -----\n{rep}")
            elif failed:
                print(f"----- log of {n.name} -----\n{n.read_log()[-6000:]}")
        if not reports:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return reports


def pytest_configure(config):
    # Run by default like every test; `-m "not slow"` leaves these out for a quick round.
    config.addinivalue_line("markers", "slow: waits out a long protocol timer (about a minute)")


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
    reports = m.close(failed)
    if reports:
        pytest.fail("sanitizer reports (logs kept in " + m.workdir + "):\n" + "\n".join(reports),
                    pytrace=False)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


@pytest.fixture
def lab(request, mesh):
    """Five namespaces on a bridge (netlab.Lab); the nodes are stopped before their
    namespaces go."""
    from netlab import Lab, lab_available

    # Set up after mesh, so torn down before it: stop the nodes here, before their
    # namespaces go (mesh's teardown then only scans their logs).
    why = lab_available()
    if why:
        pytest.skip(why)
    lab = Lab(5)
    try:
        lab.setup()
        yield lab
    finally:
        live = [n for n in mesh.nodes if n.running()]
        for n in live:
            n.send_signal(signal.SIGTERM)
        for n in live:
            try:
                n.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                n.kill9()
        errors = lab.teardown()
        assert not errors, errors
