"""Gossip membership, meshd beside Serf (both SWIM + Lifeguard, LAN timing), started the same way:
N processes on loopback, the first one alone, then the other N-1 at once with a join to it.

Every cluster runs in a network namespace of its own with only loopback in it (when root), so
that nothing else on the machine adds to its traffic and ports never collide; the two systems
run one after the other, never at the same time (2 cores). Member lists are asked of all nodes
at once and the answers read as they come (poll_all), over each node's local API: meshd's
GET /v1/members on its unix socket, Serf's RPC "members" over one kept-open TCP connection per
agent (msgpack, see common.py). Serf's member list has no "suspect" state; its suspicions are
counted from its log ("Suspect X has failed, no acks received"). meshd runs with
--log-level info, which logs every member state change with a millisecond timestamp: its
suspicions and deaths are also taken from there, independent of how fast its API answers.
"""

import datetime
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import time

from .common import (_Short, in_netns, median, mp_pack, mp_unpack, netns_usable, free_port,
                     row, rss_kib, unix_http_json, wait_until)

NAME = "membership"
ORDER = 20
TITLE = "gossip membership (join, failure detection, loss, traffic, RSS), meshd beside serf"
GOAL = ("Goals (issue 3): join convergence (start of the N-1 joiners until every node lists N "
        "alive) at most Serf's; failure detection (kill -9 of one node until all others report "
        "it dead, Serf: failed) under half of Serf's LAN profile, with no false positives; none "
        "in 60 s under 10% random packet loss on every node; bytes/s and RSS per node at "
        "N = 50 beside Serf.")

N_SMALL, N_LARGE = 5, 50
LARGE_RUNS_MAX = 3
LOSS_N, LOSS_P, LOSS_SECONDS = 10, 0.1, 60
LOSS_POLL = 0.05  # a poll round at most every 50 ms: the poller must not starve the nodes
IDLE_SETTLE, IDLE_SECONDS = 5, 20
JOIN_TIMEOUT, DETECT_TIMEOUT = 60, 90
DEAD = ("dead", "failed")  # meshd's word, Serf's word

GOSSIP_BASE, RPC_BASE = 17000, 27000
RPC_HOST_NS = "127.0.0.2"  # Serf's RPC inside a namespace: spared by the loss rules


class Cluster:
    """N nodes of one system; in a namespace of its own when ns is given."""
    system = "?"

    def __init__(self, ctx, n, ns):
        self.ctx, self.n, self.ns = ctx, n, ns
        self.names = [f"n{i + 1}" for i in range(n)]
        self.procs = [None] * n
        self.dirs = [None] * n
        if ns:
            self.ports = [GOSSIP_BASE + i for i in range(n)]
        else:
            self.ports = unique_ports(n)
        self.prefix = ns.prefix if ns else []
        self.ns_path = ns.path if ns else None

    def check_alive(self, i):
        p = self.procs[i]
        if p is not None and p.poll() is not None:
            raise RuntimeError(f"{self.system} {self.names[i]} exited with code {p.returncode}: "
                               f"{self.log_tail(i)}")

    def log_tail(self, i):
        try:
            with open(self.logfile(i), errors="replace") as f:
                return " / ".join(f.read().strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def logfile(self, i):
        return os.path.join(self.dirs[i], "node.log")

    def teardown(self):
        self.ctx.kill_all([p for p in self.procs if p is not None])


class MeshCluster(Cluster):
    system = "meshd"

    def __init__(self, ctx, n, ns):
        super().__init__(ctx, n, ns)
        kd = ctx.tempdir()
        self.key = os.path.join(kd, "mesh.key")
        r = subprocess.run([ctx.meshctl, "keygen"], capture_output=True, text=True, check=True)
        with open(os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(r.stdout)

    def start(self, i, join=None):
        d = self.ctx.tempdir()
        self.dirs[i] = d
        cmd = self.prefix + [self.ctx.meshd, "--name", self.names[i], "--data-dir", d,
                             "--bind", f"127.0.0.1:{self.ports[i]}", "--key-file", self.key,
                             "--log-level", "info"]
        if join is not None:
            cmd += ["--join", f"127.0.0.1:{self.ports[join]}"]
        with open(self.logfile(i), "wb") as log:
            self.procs[i] = self.ctx.spawn(cmd, stderr=log)

    LOG_RE = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z \w+ +\S+: "
                        rb"member (\S+) is (\w+) \(was \w+\)", re.M)

    def state_log(self, i):
        """Member state changes node i logged: [(wall-clock s, member name, new state)]."""
        with open(self.logfile(i), "rb") as f:
            data = f.read()
        out = []
        for m in self.LOG_RE.finditer(data):
            t = datetime.datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%S.%f")
            out.append((t.replace(tzinfo=datetime.timezone.utc).timestamp(),
                        m.group(2).decode(), m.group(3).decode()))
        return out

    def sock(self, i):
        return os.path.join(self.dirs[i], "api.sock")

    def members(self, i):
        j = unix_http_json(self.sock(i), "/v1/members")
        if j is None:
            self.check_alive(i)
            return None
        return {m["name"]: m["status"] for m in j.get("members", [])}

    def begin(self, i):
        """Sends GET /v1/members to node i; returns a request for poll_all, or None."""
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect(self.sock(i))
            s.sendall(b"GET /v1/members HTTP/1.0\r\n\r\n")
        except OSError:
            s.close()
            self.check_alive(i)
            return None
        return _HttpReq(s)

    def counters(self):
        """Sum over live nodes of /v1/status gossip.suspicions and gossip.refutes."""
        sus = ref = 0
        for i in range(self.n):
            if self.procs[i] is None or self.procs[i].poll() is not None:
                continue
            j = unix_http_json(self.sock(i), "/v1/status") or {}
            g = j.get("gossip", {})
            sus += g.get("suspicions", 0)
            ref += g.get("refutes", 0)
        return {"suspicions": sus, "refutes": ref}


class _HttpReq:
    """One HTTP/1.0 request in flight; the answer ends when the server closes."""

    def __init__(self, s):
        self.sock, self.chunks = s, []

    def feed(self, d):
        if d:
            self.chunks.append(d)
            return False
        return True

    def result(self):
        head, _, body = b"".join(self.chunks).partition(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            return None
        try:
            return {m["name"]: m["status"] for m in json.loads(body).get("members", [])}
        except (ValueError, AttributeError):
            return None

    def finish(self, ok):
        self.sock.close()


class _SerfReq:
    """One RPC "members" request in flight on a kept-open connection."""

    def __init__(self, cluster, i, seq):
        self.cluster, self.i, self.seq = cluster, i, seq
        self.rpc = cluster.rpcs[i]
        self.sock = self.rpc.s
        self.hdr = self.body = None
        self.failed = False

    def feed(self, d):
        if not d:
            self.failed = True
            return True
        self.rpc.buf += d
        try:
            if self.hdr is None:
                self.hdr, k = mp_unpack(self.rpc.buf)
                self.rpc.buf = self.rpc.buf[k:]
                if self.hdr.get("Seq") != self.seq or self.hdr.get("Error"):
                    self.failed = True
                    return True
            self.body, k = mp_unpack(self.rpc.buf)
            self.rpc.buf = self.rpc.buf[k:]
            return True
        except _Short:
            return False
        except ValueError:
            self.failed = True
            return True

    def result(self):
        if self.failed or not isinstance(self.body, dict):
            return None
        return {m["Name"]: m["Status"] for m in self.body.get("Members", [])}

    def finish(self, ok):
        if not ok or self.failed:
            self.cluster.drop_rpc(self.i)


def poll_all(cl, idxs, timeout=3.0):
    """Asks every node in idxs for its member list at once and collects the answers as they
    come: {i: (members dict or None, monotonic time of the answer)}. One slow node does not
    delay the reading of the others."""
    sel = selectors.DefaultSelector()
    out = {}
    for i in idxs:
        req = cl.begin(i)
        if req is None:
            out[i] = (None, time.monotonic())
        else:
            sel.register(req.sock, selectors.EVENT_READ, (i, req))
    deadline = time.monotonic() + timeout
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            events = sel.select(left) if left > 0 else []
            if not events:
                break
            for key, _ in events:
                i, req = key.data
                try:
                    d = key.fileobj.recv(65536)
                except OSError:
                    d = b""
                if req.feed(d):
                    sel.unregister(key.fileobj)
                    out[i] = (req.result(), time.monotonic())
                    req.finish(True)
        for key in list(sel.get_map().values()):  # no answer in time
            i, req = key.data
            sel.unregister(key.fileobj)
            req.finish(False)
            out[i] = (None, time.monotonic())
    finally:
        sel.close()
    return out


class SerfRPC:
    """One Serf agent's RPC: handshake, then "members" requests on one connection."""

    def __init__(self, host, port, ns_path, timeout=2.0):
        with in_netns(ns_path):
            self.s = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.seq = 0
        self.call("handshake", {"Version": 1})

    def _read(self):
        while True:
            try:
                o, k = mp_unpack(self.buf)
                self.buf = self.buf[k:]
                return o
            except _Short:
                d = self.s.recv(65536)
                if not d:
                    raise ConnectionError("serf RPC closed")
                self.buf += d

    def call(self, cmd, body=None, want_body=False):
        seq = self.seq
        self.seq += 1
        self.s.sendall(mp_pack({"Command": cmd, "Seq": seq}) +
                       (mp_pack(body) if body is not None else b""))
        hdr = self._read()
        if hdr.get("Seq") != seq:
            raise ConnectionError(f"serf RPC: answer to {hdr.get('Seq')}, expected {seq}")
        if hdr.get("Error"):
            raise RuntimeError(f"serf RPC {cmd}: {hdr['Error']}")
        return self._read() if want_body else None

    def close(self):
        self.s.close()


class SerfCluster(Cluster):
    system = "serf"

    def __init__(self, ctx, n, ns):
        super().__init__(ctx, n, ns)
        self.serf = shutil.which("serf")
        self.rpc_host = RPC_HOST_NS if ns else "127.0.0.1"
        self.rpc_ports = [RPC_BASE + i for i in range(n)] if ns else unique_ports(n, self.ports)
        self.rpcs = [None] * n

    def start(self, i, join=None):
        d = self.ctx.tempdir()
        self.dirs[i] = d
        cmd = self.prefix + [self.serf, "agent", "-node", self.names[i],
                             "-bind", f"127.0.0.1:{self.ports[i]}",
                             "-rpc-addr", f"{self.rpc_host}:{self.rpc_ports[i]}",
                             "-profile", "lan", "-log-level", "info"]
        if join is not None:
            cmd += ["-join", f"127.0.0.1:{self.ports[join]}"]
        with open(self.logfile(i), "wb") as log:
            self.procs[i] = self.ctx.spawn(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=d)

    def members(self, i):
        try:
            if self.rpcs[i] is None:
                self.rpcs[i] = SerfRPC(self.rpc_host, self.rpc_ports[i], self.ns_path)
            body = self.rpcs[i].call("members", want_body=True)
            return {m["Name"]: m["Status"] for m in body.get("Members", [])}
        except (OSError, ConnectionError, ValueError):
            if self.rpcs[i] is not None:
                self.rpcs[i].close()
                self.rpcs[i] = None
            self.check_alive(i)
            return None

    def begin(self, i):
        """Sends "members" on node i's RPC connection (opened on first use); returns a
        request for poll_all, or None."""
        try:
            if self.rpcs[i] is None:
                self.rpcs[i] = SerfRPC(self.rpc_host, self.rpc_ports[i], self.ns_path)
            rpc = self.rpcs[i]
            seq = rpc.seq
            rpc.seq += 1
            rpc.s.sendall(mp_pack({"Command": "members", "Seq": seq}))
            return _SerfReq(self, i, seq)
        except (OSError, ConnectionError, ValueError, RuntimeError):
            self.drop_rpc(i)
            self.check_alive(i)
            return None

    def drop_rpc(self, i):
        if self.rpcs[i] is not None:
            self.rpcs[i].close()
            self.rpcs[i] = None

    SUSPECT_RE = re.compile(rb"memberlist: Suspect (\S+) has failed")
    REFUTE_RE = re.compile(rb"memberlist: Refuting a (suspect|dead) message")

    def log_offsets(self):
        return [os.path.getsize(self.logfile(i)) for i in range(self.n)]

    def log_since(self, offsets):
        """Suspicion lines and refutations logged since offsets: ({suspected names}, count,
        refutes)."""
        names, count, refutes = set(), 0, 0
        for i in range(self.n):
            with open(self.logfile(i), "rb") as f:
                f.seek(offsets[i])
                data = f.read()
            for m in self.SUSPECT_RE.finditer(data):
                names.add(m.group(1).decode())
                count += 1
            refutes += len(self.REFUTE_RE.findall(data))
        return names, count, refutes

    def teardown(self):
        for r in self.rpcs:
            if r is not None:
                r.close()
        self.rpcs = [None] * self.n
        super().teardown()


def unique_ports(n, taken=()):
    out, seen = [], set(taken)
    while len(out) < n:
        p = free_port()
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


# ---- measurements --------------------------------------------------------------------------

def start_and_converge(cl):
    """Starts node 1, waits until it answers, starts the others at once joining it; returns
    (seconds until every node lists N alive, mean poll round in s)."""
    cl.start(0)
    wait_until(lambda: cl.members(0) is not None, timeout=20, interval=0.01)
    t0 = time.monotonic()
    for i in range(1, cl.n):
        cl.start(i, join=0)
    done, rounds = {}, 0
    while len(done) < cl.n:
        if time.monotonic() - t0 > JOIN_TIMEOUT:
            raise TimeoutError(f"{cl.system} N={cl.n}: only {len(done)} of {cl.n} nodes listed "
                               f"all alive after {JOIN_TIMEOUT} s")
        for i, (m, t) in poll_all(cl, [i for i in range(cl.n) if i not in done]).items():
            if m and len(m) == cl.n and all(s == "alive" for s in m.values()):
                done[i] = t
        rounds += 1
    elapsed = time.monotonic() - t0
    return max(done.values()) - t0, elapsed / rounds


def detect(cl, victim):
    """kill -9 of node victim; polls all others (poll_all) until each reports it dead.
    Returns a dict: all_dead (s), first_suspect (s or None), median_dead (s), round (s),
    false (set of (name, status) reported for nodes other than the victim)."""
    vname = cl.names[victim]
    observers = [i for i in range(cl.n) if i != victim]
    wall0 = time.time()
    t0 = time.monotonic()
    cl.procs[victim].send_signal(signal.SIGKILL)
    cl.procs[victim].wait()
    dead_at, suspect_at, false, rounds = {}, {}, set(), 0
    while len(dead_at) < len(observers):
        if time.monotonic() - t0 > DETECT_TIMEOUT:
            raise TimeoutError(f"{cl.system} N={cl.n}: {len(dead_at)} of {len(observers)} "
                               f"report {vname} dead after {DETECT_TIMEOUT} s")
        for i, (m, now) in poll_all(cl, observers).items():
            if m is None:
                continue
            st = m.get(vname)
            if st == "suspect":
                suspect_at.setdefault(i, now)
            if st in DEAD:
                dead_at.setdefault(i, now)
            for name, s in m.items():
                if name != vname and s != "alive":
                    false.add((name, s))
        rounds += 1
    elapsed = time.monotonic() - t0
    logged = None
    if hasattr(cl, "state_log"):  # meshd logs each change with a ms timestamp
        ldead, lsus, lfalse = [], [], set()
        for i in observers:
            ev = [(t - wall0, name, st) for t, name, st in cl.state_log(i) if t >= wall0 - 0.01]
            d = [t for t, name, st in ev if name == vname and st == "dead"]
            u = [t for t, name, st in ev if name == vname and st == "suspect"]
            if d:
                ldead.append(min(d))
            if u:
                lsus.append(min(u))
            lfalse |= {(name, st) for t, name, st in ev if name != vname and st != "alive"}
        logged = {"all_dead": max(ldead) if len(ldead) == len(observers) else None,
                  "first_suspect": min(lsus) if lsus else None,
                  "median_suspect": median(lsus) if lsus else None, "false": lfalse}
    return {"logged": logged, "all_dead": max(dead_at.values()) - t0,
            "median_dead": median([t - t0 for t in dead_at.values()]),
            "first_suspect": (min(suspect_at.values()) - t0) if suspect_at else None,
            "round": elapsed / rounds, "false": false}


def idle_traffic(ctx, cl):
    """Bytes/s per node over loopback in the cluster's namespace, and median RSS per node."""
    time.sleep(IDLE_SETTLE)
    pid = cl.procs[0].pid
    c0 = sum(cpu_ticks(p.pid) for p in cl.procs)
    b0, t0 = cl.ns.lo_bytes(pid), time.monotonic()
    time.sleep(IDLE_SECONDS)
    b1, t1 = cl.ns.lo_bytes(pid), time.monotonic()
    c1 = sum(cpu_ticks(p.pid) for p in cl.procs)
    rss = median([rss_kib(p.pid) / 1024 for p in cl.procs])
    cpu = (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0) / cl.n * 100
    return (b1 - b0) / (t1 - t0) / cl.n, rss, cpu


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def new_cluster(ctx, kind, n, tag, use_ns):
    ns = ctx.netns(tag) if use_ns else None
    return kind(ctx, n, ns)


def end_cluster(ctx, cl):
    cl.teardown()
    if cl.ns:
        ctx.drop_netns(cl.ns)


def join_and_detect(ctx, sc, kind, n, runs, use_ns, measure_idle):
    conv, det, sus, med, rounds_j, rounds_d, false_runs = [], [], [], [], [], [], []
    ldet, lsus, lsus_med, lfalse = [], [], [], []
    idle = None
    for r in range(runs):
        cl = new_cluster(ctx, kind, n, f"{kind.system}{n}r{r}", use_ns)
        try:
            c, rj = start_and_converge(cl)
            conv.append(c)
            rounds_j.append(rj)
            if measure_idle and r == 0:
                idle = idle_traffic(ctx, cl)
            d = detect(cl, n - 1)
            det.append(d["all_dead"])
            med.append(d["median_dead"])
            rounds_d.append(d["round"])
            if d["first_suspect"] is not None:
                sus.append(d["first_suspect"])
            false_runs.append(d["false"])
            lg = d["logged"]
            if lg:
                if lg["all_dead"] is not None:
                    ldet.append(lg["all_dead"])
                if lg["first_suspect"] is not None:
                    lsus.append(lg["first_suspect"])
                    lsus_med.append(lg["median_suspect"])
                lfalse.append(lg["false"])
        finally:
            end_cluster(ctx, cl)
        print(f"   {kind.system} N={n} run {r + 1}/{runs}: converged {c:.2f} s, "
              f"all report dead {d['all_dead']:.2f} s"
              + (f" (first suspect {d['first_suspect']:.2f} s)" if d["first_suspect"] else "")
              + (f", false: {sorted(d['false'])}" if d["false"] else "")
              + (f"; logged: all dead {fmt([d['logged']['all_dead'] or float('nan')])} s, first "
                 f"suspect {fmt([d['logged']['first_suspect'] or float('nan')])} s"
                 if d["logged"] else ""), flush=True)
    return {"conv": median(conv), "det": median(det), "det_median_observer": median(med),
            "first_suspect": median(sus) if sus else None, "round_join": median(rounds_j),
            "round_detect": median(rounds_d), "false": false_runs, "idle": idle,
            "conv_all": conv, "det_all": det,
            "log_det": median(ldet) if ldet else None, "log_det_all": ldet,
            "log_first_suspect": median(lsus) if lsus else None,
            "log_median_suspect": median(lsus_med) if lsus_med else None,
            "log_false": lfalse}


def loss_run(ctx, kind):
    """LOSS_N nodes in a namespace; after they converge, every packet entering loopback is
    dropped with probability LOSS_P (Serf's RPC address spared) for LOSS_SECONDS; polls the
    member lists all along. Returns counts."""
    cl = new_cluster(ctx, kind, LOSS_N, f"{kind.system}loss", True)
    try:
        start_and_converge(cl)
        time.sleep(2)
        before = cl.counters() if kind is MeshCluster else cl.log_offsets()
        wall0 = time.time()
        for rule in (["-s", RPC_HOST_NS, "-j", "ACCEPT"], ["-d", RPC_HOST_NS, "-j", "ACCEPT"],
                     ["-m", "statistic", "--mode", "random", "--probability", str(LOSS_P),
                      "-j", "DROP"]):
            cl.ns.run(["iptables", "-A", "INPUT"] + rule)
        t0 = time.monotonic()
        suspect, dead, rounds = set(), set(), 0
        while time.monotonic() - t0 < LOSS_SECONDS:
            time.sleep(max(0.0, t0 + rounds * LOSS_POLL - time.monotonic()))
            for m, _ in poll_all(cl, range(cl.n)).values():
                for name, s in (m or {}).items():
                    if s == "suspect":
                        suspect.add(name)
                    elif s in DEAD:
                        dead.add(name)
            rounds += 1
        elapsed = time.monotonic() - t0
        drops = cl.ns.run(["iptables", "-L", "INPUT", "-v", "-x", "-n"])
        res = {"suspect_polled": suspect, "dead": dead, "round": elapsed / rounds}
        if kind is MeshCluster:
            after = cl.counters()
            res["events"] = after["suspicions"] - before["suspicions"]
            res["refutes"] = after["refutes"] - before["refutes"]
            for i in range(cl.n):
                for t, name, st in cl.state_log(i):
                    if t >= wall0 and st == "suspect":
                        suspect.add(name)
                    elif t >= wall0 and st == "dead":
                        dead.add(name)
            res["suspect"] = suspect
        else:
            names, count, refutes = cl.log_since(before)
            res["events"], res["refutes"] = count, refutes
            res["suspect"] = names
        res["dropped_pkts"] = next((int(line.split()[0]) for line in drops.splitlines()
                                    if "statistic" in line), 0)
    finally:
        end_cluster(ctx, cl)
    print(f"   {kind.system} loss: suspect {sorted(res['suspect'])}, dead {sorted(res['dead'])}, "
          f"events {res['events']}, refutes {res['refutes']}, dropped {res['dropped_pkts']}",
          flush=True)
    return res


def run(ctx, sc):
    if not shutil.which("serf"):
        raise RuntimeError("serf not installed (Debian package serf): no baseline to compare")

    def on_term(signum, frame):
        raise SystemExit(143)  # so that run.py's cleanup kills the nodes, drops the namespaces

    prev = signal.signal(signal.SIGTERM, on_term)
    try:
        _run(ctx, sc)
    finally:
        signal.signal(signal.SIGTERM, prev)


def _run(ctx, sc):
    load0 = os.getloadavg()[0]
    why_no_ns = netns_usable()
    use_ns = why_no_ns is None
    notes = sc["notes"]
    res = {}
    for n in (N_SMALL, N_LARGE):
        runs = ctx.runs if n == N_SMALL else min(ctx.runs, LARGE_RUNS_MAX)
        for kind in (SerfCluster, MeshCluster):  # one after the other, never both at once
            res[(kind.system, n)] = join_and_detect(ctx, sc, kind, n, runs, use_ns,
                                                    measure_idle=(n == N_LARGE and use_ns))
        s, m = res[("serf", n)], res[("meshd", n)]
        row(sc, f"join convergence, N={n} (median of {runs})", "serf", s["conv"], "s")
        row(sc, f"join convergence, N={n} (median of {runs})", "meshd", m["conv"], "s", s["conv"])
    for n in (N_SMALL, N_LARGE):
        s, m = res[("serf", n)], res[("meshd", n)]
        row(sc, f"failure detection, all others report dead, N={n}", "serf", s["det"], "s")
        row(sc, f"failure detection, all others report dead, N={n}", "meshd", m["det"], "s",
            s["det"])
        if m["log_det"] is not None:
            row(sc, f"failure detection, all others dead by their own log, N={n}", "meshd",
                m["log_det"], "s", s["det"])
        if m["log_first_suspect"] is not None:
            row(sc, f"kill -9 to first suspicion (log), N={n}", "meshd",
                m["log_first_suspect"], "s")
            row(sc, f"kill -9 to median node's suspicion (log), N={n}", "meshd",
                m["log_median_suspect"], "s")
        lbad = [sorted(f) for f in m["log_false"] if f]
        notes.append(
            f"meshd N={n} from its own logs (--log-level info, ms timestamps, independent of "
            f"API latency): all others dead per run {fmt(m['log_det_all'])} s; "
            + (f"OTHER members logged non-alive during detection: {lbad}" if lbad else
               "no other member logged suspect/dead during detection"))
        for sysname in ("serf", "meshd"):
            r = res[(sysname, n)]
            bad = [sorted(f) for f in r["false"] if f]
            notes.append(
                f"{sysname} N={n}: convergence per run {fmt(r['conv_all'])} s, detection per "
                f"run {fmt(r['det_all'])} s (median observer {r['det_median_observer']:.2f} s); "
                f"poll round {r['round_join'] * 1000:.0f} ms while joining, "
                f"{r['round_detect'] * 1000:.0f} ms while detecting; "
                + (f"FALSE POSITIVES during detection (other nodes reported non-alive): {bad}"
                   if bad else "no other node reported non-alive during detection"))

    if use_ns and shutil.which("iptables"):
        loss = {kind.system: loss_run(ctx, kind) for kind in (SerfCluster, MeshCluster)}
        s, m = loss["serf"], loss["meshd"]
        label = f"N={LOSS_N}, {LOSS_SECONDS} s at {LOSS_P:.0%} loss"
        row(sc, f"members ever suspected, {label}", "serf", len(s["suspect"]), "members")
        row(sc, f"members ever suspected, {label}", "meshd", len(m["suspect"]), "members",
            len(s["suspect"]))
        row(sc, f"members ever reported dead/failed, {label}", "serf", len(s["dead"]), "members")
        row(sc, f"members ever reported dead/failed, {label}", "meshd", len(m["dead"]),
            "members", len(s["dead"]))
        # A suspicion of a live member ends in that member refuting it: the refutations count
        # suspicion episodes the same way for both (suspicion counters do not: meshd's counts
        # every node that marks a member suspect, Serf's log only the prober that starts one).
        row(sc, f"refuted suspicions of live members, {label}", "serf", s["refutes"],
            "refutations")
        row(sc, f"refuted suspicions of live members, {label}", "meshd", m["refutes"],
            "refutations", s["refutes"])
        notes.append(
            f"loss: iptables INPUT DROP with statistic probability {LOSS_P} inside each system's "
            f"own namespace, on every packet over its loopback (gossip UDP and push-pull TCP); "
            f"dropped {s['dropped_pkts']} packets (serf) / {m['dropped_pkts']} (meshd). "
            f"Suspected: serf {sorted(s['suspect'])} (from its log: {s['events']} 'Suspect X "
            f"has failed' lines by probers, {s['refutes']} 'Refuting a suspect' lines), meshd "
            f"{sorted(m['suspect'])} (polled member lists and logs; /v1/status suspicions "
            f"+{m['events']} summed over nodes, i.e. every node that marked a member suspect, "
            f"refutes +{m['refutes']}). Reported dead/failed: serf "
            f"{sorted(s['dead'])}, meshd {sorted(m['dead'])}. Poll round "
            f"{s['round'] * 1000:.0f} ms (serf) / {m['round'] * 1000:.0f} ms (meshd).")
    else:
        notes.append("packet-loss false positives not measured: "
                     + (why_no_ns or "no iptables"))

    if use_ns:
        sb, sr, sc_ = res[("serf", N_LARGE)]["idle"]
        mb, mr, mc = res[("meshd", N_LARGE)]["idle"]
        row(sc, f"loopback bytes/s per node, idle, N={N_LARGE}", "serf", sb, "B/s")
        row(sc, f"loopback bytes/s per node, idle, N={N_LARGE}", "meshd", mb, "B/s", sb)
        row(sc, f"RSS per node, N={N_LARGE} (median)", "serf", sr, "MiB")
        row(sc, f"RSS per node, N={N_LARGE} (median)", "meshd", mr, "MiB", sr)
        row(sc, f"CPU per node, idle, N={N_LARGE} (mean)", "serf", sc_, "% of a core")
        row(sc, f"CPU per node, idle, N={N_LARGE} (mean)", "meshd", mc, "% of a core", sc_)
        notes.append(
            f"traffic: lo transmit bytes (IP packets plus 14-byte link header) in the cluster's "
            f"namespace over {IDLE_SECONDS} s, {IDLE_SETTLE} s after convergence in the first "
            f"N={N_LARGE} run, divided by N; includes periodic push-pull if one falls in the "
            f"window. RSS: VmRSS at the end of that window; CPU: utime+stime over the window.")
    else:
        notes.append(f"traffic per node not measured: {why_no_ns} (needs a namespace of its "
                     f"own to count only the cluster's packets)")
        notes.append(f"clusters ran on the host's loopback ({why_no_ns})")
    notes.append(f"machine load average (1 min) {load0:.1f} at the start, "
                 f"{os.getloadavg()[0]:.1f} at the end (other work on the machine shares the "
                 f"2 cores)")
    notes.append(
        f"ratio = meshd / serf. meshd LAN profile (probe 500 ms, suspicion mult 4); serf "
        f"-profile lan (memberlist DefaultLANConfig: probe 1 s, suspicion mult 4). Joiners "
        f"started back to back (the spawn time is inside the convergence figure); the poller "
        f"shares the 2 cores with the cluster; times are to the poll that first saw the state, "
        f"so they are late by up to one poll round (listed per system).")


def fmt(xs):
    return "/".join(f"{x:.2f}" for x in xs)
