"""What the deploy and failover scenarios share: a private container engine (scripts/engine.sh,
Podman unless FOGMESH_ENGINE_KIND=docker), a small meshd mesh on loopback that uses it, and
tight polls of the engine's container list and of meshd's logs.

Not a scenario (run.py skips modules whose name starts with "_")."""

import calendar
import json
import os
import re
import subprocess
import time
import urllib.parse

from .common import free_port, unix_http_get, unix_http_json, unix_http_ok, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE_SH = os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "engine.sh")
IMAGE = "localhost/bbox:latest"
COMMAND = ["/bin/sh", "-c", "while true; do sleep 1; done"]
MEMORY = 16 * 1024 * 1024
CPUS = 0.1


class Engine:
    """A private engine in a temp dir of ctx; stop() removes it (also called by the scenario's
    finally)."""

    def __init__(self, ctx):
        self.kind = os.environ.get("FOGMESH_ENGINE_KIND", "podman")
        self.dir = os.path.join(ctx.tempdir(), "engine")
        r = subprocess.run([ENGINE_SH, "--kind", self.kind, "start", self.dir],
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"engine.sh --kind {self.kind} start: {r.stderr.strip()[-400:]}")
        self.sock = r.stdout.strip().splitlines()[-1]
        v = unix_http_json(self.sock, "/v1.41/version") or {}
        self.version = f"{self.kind} {v.get('Version', '?')}"

    def stop(self):
        subprocess.run([ENGINE_SH, "stop", self.dir], capture_output=True, timeout=180)

    def request(self, method, path, body=None, timeout=30.0):
        """One HTTP/1.0 request on the engine's socket; returns (status, decoded JSON or None)."""
        import socket
        data = json.dumps(body).encode() if body is not None else b""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock)
        head = f"{method} /v1.41{path} HTTP/1.0\r\nHost: e\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        s.sendall(head.encode() + b"\r\n" + data)
        chunks = []
        while True:
            d = s.recv(65536)
            if not d:
                break
            chunks.append(d)
        s.close()
        raw = b"".join(chunks)
        hd, _, bd = raw.partition(b"\r\n\r\n")
        status = int(hd.split(None, 2)[1])
        try:
            return status, (json.loads(bd) if bd.strip() else None)
        except ValueError:
            return status, None

    def containers(self, label):
        """[(labels, state)] of the containers with the label ("key=value")."""
        filt = urllib.parse.quote(json.dumps({"label": [label]}))
        r = unix_http_get(self.sock, f"/v1.41/containers/json?all=true&filters={filt}",
                          timeout=10)
        if not r or r[0] != 200:
            return []
        try:
            return [(c.get("Labels") or {}, c.get("State")) for c in json.loads(r[1])]
        except ValueError:
            return []

    def running_on(self, app):
        """The fogmesh.node of a running container of app, or None."""
        for labels, state in self.containers(f"fogmesh.app={app}"):
            if state == "running":
                return labels.get("fogmesh.node")
        return None

    def create_start(self, name):
        """The floor: what the reconciler asks of the engine for one replica, done directly:
        create (same image, command, host network, limits, restart policy, labels) and start.
        Returns the seconds until start answered (the container then runs)."""
        body = {"Image": IMAGE, "Cmd": COMMAND, "Labels": {"fogmesh.bench": name},
                "HostConfig": {"NetworkMode": "host", "Memory": MEMORY,
                               "NanoCpus": int(CPUS * 1e9),
                               "RestartPolicy": {"Name": "always"}}}
        t0 = time.monotonic()
        st, res = self.request("POST", f"/containers/create?name={name}", body)
        if st != 201:
            raise RuntimeError(f"engine create: {st} {res}")
        st, res = self.request("POST", f"/containers/{res['Id']}/start")
        if st not in (204, 304):
            raise RuntimeError(f"engine start: {st} {res}")
        t1 = time.monotonic()
        self.request("DELETE", f"/containers/{name}?force=true")
        return t1 - t0


class Mesh:
    """n meshd on loopback sharing one mesh key and the engine; node i is "wl{pid}n{i}"."""

    def __init__(self, ctx, engine, n, args=(), labels=None):
        self.ctx, self.engine = ctx, engine
        self.dir = ctx.tempdir()
        key = subprocess.run([ctx.meshctl, "keygen"], capture_output=True, text=True,
                             check=True).stdout
        self.key = os.path.join(self.dir, "mesh.key")
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, key.encode())
        os.close(fd)
        self.names = [f"wl{os.getpid()}n{i}" for i in range(n)]
        self.ports = [free_port() for _ in range(n)]
        self.procs = [None] * n
        self.logs = [os.path.join(self.dir, f"{nm}.log") for nm in self.names]
        labels = labels or {}
        for i in range(n):
            d = os.path.join(self.dir, self.names[i])
            cmd = [ctx.meshd, "--name", self.names[i], "--data-dir", d,
                   "--bind", f"127.0.0.1:{self.ports[i]}", "--key-file", self.key,
                   "--engine", f"unix://{engine.sock}", "--log-level", "info", *args]
            for k, v in labels.get(i, {}).items():
                cmd += ["--label", f"{k}={v}"]
            if i:
                cmd += ["--join", f"127.0.0.1:{self.ports[0]}"]
            with open(self.logs[i], "ab") as log:
                self.procs[i] = ctx.spawn(cmd, stdout=log, stderr=subprocess.STDOUT)
            wait_until(lambda: unix_http_ok(self.sock(i)), timeout=30, interval=0.01)
        # Whole: every node sees every node alive with its engine, and is in the Raft
        # configuration (voter or standby) with a leader known.
        wait_until(lambda: all(self.nodes_ready(i) and self.raft_ready(i) for i in range(n)),
                   timeout=60, interval=0.05)

    def raft_ready(self, i):
        st = unix_http_json(self.sock(i), "/v1/status") or {}
        raft = st.get("raft") or {}
        conf = (raft.get("voters") or []) + (raft.get("standbys") or [])
        return bool(raft.get("leader")) and self.names[i] in conf

    def leader(self, i=0):
        st = unix_http_json(self.sock(i), "/v1/status") or {}
        return (st.get("raft") or {}).get("leader")

    def sock(self, i):
        return os.path.join(self.dir, self.names[i], "api.sock")

    def nodes_ready(self, i):
        j = unix_http_json(self.sock(i), "/v1/nodes")
        if not j:
            return False
        ns = j.get("nodes", [])
        return len(ns) == len(self.names) and all(
            x.get("status") == "alive" and x.get("engine") == "available" for x in ns)

    def status_of(self, i, name):
        j = unix_http_json(self.sock(i), "/v1/members", timeout=1.0)
        for m in (j or {}).get("members", []):
            if m.get("name") == name:
                return m.get("status")
        return None

    def ctl(self, i, *args, stdin=None):
        return subprocess.run([self.ctx.meshctl, "--socket", self.sock(i), *args], input=stdin,
                              capture_output=True, text=True, timeout=30)

    def deploy(self, i, text):
        r = self.ctl(i, "deploy", "-f", "-", stdin=text)
        if r.returncode != 0:
            raise RuntimeError(f"meshctl deploy on {self.names[i]}: {r.stderr.strip()}")

    def kill9(self, i):
        self.ctx.kill_all([self.procs[i]])
        self.procs[i] = None

    def stop(self):
        """Kills the nodes; their containers go with the engine (Engine.stop)."""
        self.ctx.kill_all([p for p in self.procs if p is not None])

    def log_time(self, pattern, after_wall):
        """The wall-clock time (time.time()) of the first line matching pattern, at or after
        after_wall, in any node's log; None when there is none."""
        rx = re.compile(pattern)
        best = None
        for path in self.logs:
            try:
                with open(path, errors="replace") as f:
                    for line in f:
                        if not rx.search(line):
                            continue
                        t = parse_log_time(line)
                        if t is not None and t >= after_wall - 0.001 and (best is None
                                                                           or t < best):
                            best = t
                            break
            except OSError:
                pass
        return best


_TS = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z ")


def parse_log_time(line):
    m = _TS.match(line)
    if not m:
        return None
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    return calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000.0


def spec(app, placement=None):
    ms = {"name": "svc", "image": IMAGE, "command": COMMAND,
          "resources": {"memory": "16Mi", "cpus": CPUS}}
    if placement:
        ms["placement"] = placement
    return json.dumps({"kind": "Application", "name": app, "microservices": [ms]})
