"""Service tunnels (issue 6): request/response latency and throughput of the same traffic to
the same TCP servers over five paths, in one run: direct TCP (the floor), a `socat` relay, an
`ssh -L` tunnel, the mesh at 1 hop and the mesh at 2 hops; and the CPU each forwarding process
spends per GiB.

Topology (all made here, pid-tagged, deleted at the end): three node namespaces A, B, C, each
with an eth0 on one bridge (in a fourth namespace), 10.232.0.1/.2/.3, MTU 1500 (veth with
GSO/GRO, as a LAN host). The client tools always run in A. The servers (`sockperf server`,
`iperf3 -s`) run in B and in C, listening on every address of their namespace.

- direct: the client in A connects to the server at B's address.
- socat: `socat TCP-LISTEN` in A on 127.0.0.1, relaying each connection to B's server.
- ssh -L: a private sshd in B (its own host key, config and authorized_keys in a temp dir; run in
  a private mount namespace that has the /run/sshd it needs, so the machine is not touched),
  `ssh -N -L` in A with -F /dev/null and known_hosts in the temp dir; the cipher is ssh's
  default (negotiated one reported in the notes); the far end connects to 127.0.0.1 in B.
- mesh, 1 hop: meshd in A, B and C (one mesh); `meshctl service expose` on B (target
  127.0.0.1:PORT in B), `meshctl service connect --listen 127.0.0.1:PORT --node A`: client ->
  A's listener -> link -> B -> server.
- mesh, 2 hops: the same for a service on C, with the direct A-C path dropped by iptables inside
  A and C (after the declarations, so that the run measures the tunnel alone), once A routes to C
  through B (2 hops): client -> A -> B -> C -> server.

Latency: `sockperf ping-pong --tcp`, 64-byte messages, one connection, back to back, for
LAT_SECONDS (sockperf's own 400 ms warm-up excluded); sockperf reports one-way latency (half the
round trip) and its percentiles. Throughput: `iperf3 -c` (client sends) with -P 1 and -P 8 for
TP_SECONDS, bytes received by the server per second. CPU: utime + stime (/proc/PID/stat) of
every forwarding process (socat; ssh and sshd's session processes; the meshd on the path) across
the single-stream run, divided by the GiB received and by the number of those processes.
Each run takes one measurement at a time over every path, back to back, in an order reversed
every other run, so that each path is measured within seconds of ssh -L (this machine's speed
drifts: shared cores, steal time). Figures are medians over --runs; ratios are medians of the
same-run ratios to ssh -L (paired), which cancel the drift between runs.
"""

import json
import os
import re
import shutil
import signal
import subprocess

from .common import in_netns, median, netns_usable, row, tcp_accepts, unix_http_json, wait_until

NAME = "tunnel"
ORDER = 60
TITLE = ("service tunnels: latency and throughput through the mesh at 1 and 2 hops, beside "
         "direct TCP, socat and ssh -L")
GOAL = ("Issue 6: mesh 1-hop throughput at least 1.2x `ssh -L`'s and 1-hop p50 latency no worse "
        "than `ssh -L`'s; CPU seconds per GiB forwarded per hop.")

SUBNET = "10.232.0"
LAT_SECONDS = 4
LAT_MSG = 64
TP_SECONDS = 5
STREAMS = 8
SETUP_TIMEOUT = 60

PP_PORT, TP_PORT = 5001, 5201          # the servers, in B and in C
SOCAT_PP, SOCAT_TP = 6001, 6201        # listeners in A
SSH_PP, SSH_TP = 7001, 7201
MESH1_PP, MESH1_TP = 8001, 8201
MESH2_PP, MESH2_TP = 9001, 9201
SSHD_PORT = 2222
MESH_PORT = 7946

TOOLS = ("sockperf", "iperf3", "socat", "ssh", "ssh-keygen", "unshare", "iptables")


def ip_of(i):
    return f"{SUBNET}.{i + 1}"


def cpu_ticks(pid, reaped=False):
    """utime + stime of pid, in clock ticks (0 once it is gone); with reaped, plus those of its
    children that exited and were waited for (cutime + cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]
        return sum(fields if reaped else fields[:2])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid):
    """Every live process below pid."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Lab:
    """A bridge namespace and three node namespaces (ctx.netns: deleted by ctx.cleanup)."""

    def __init__(self, ctx, n=3):
        self.br = ctx.netns("br")
        self.nodes = []
        subprocess.run(["ip", "-n", self.br.name, "link", "add", "br0", "type", "bridge"],
                       check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.br.name, "link", "set", "br0", "up"], check=True,
                       capture_output=True)
        for i in range(n):
            ns = ctx.netns("abc"[i])
            self.nodes.append(ns)
            # both ends are made inside our namespaces: the machine's own is never touched
            for cmd in (["link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
                         "netns", self.br.name],
                        ["addr", "add", f"{ip_of(i)}/24", "dev", "eth0"],
                        ["link", "set", "eth0", "up"]):
                subprocess.run(["ip", "-n", ns.name, *cmd], check=True, capture_output=True)
            for cmd in (["link", "set", f"p{i}", "master", "br0"],
                        ["link", "set", f"p{i}", "up"]):
                subprocess.run(["ip", "-n", self.br.name, *cmd], check=True,
                               capture_output=True)

    def cut(self, i, j):
        """Drops all traffic between nodes i and j (rules inside both namespaces)."""
        for a, b in ((i, j), (j, i)):
            self.nodes[a].run(["iptables", "-w", "-A", "INPUT", "-s", ip_of(b), "-j", "DROP"])
            self.nodes[a].run(["iptables", "-w", "-A", "OUTPUT", "-d", ip_of(b), "-j", "DROP"])


def accepts_in(ns, host, port):
    with in_netns(ns.path):
        return tcp_accepts(host, port)


# ---- the paths ----

class Ssh:
    """A private sshd in B and `ssh -N -L` in A for the two servers' ports."""

    def __init__(self, ctx, lab):
        self.ctx = ctx
        d = ctx.tempdir()
        self.dir = d
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fogbench",
                            "-f", os.path.join(d, name)], check=True, capture_output=True)
        shutil.copy(os.path.join(d, "client.pub"), os.path.join(d, "authorized_keys"))
        conf = os.path.join(d, "sshd_config")
        with open(conf, "w") as f:
            f.write(f"ListenAddress {ip_of(1)}:{SSHD_PORT}\n"
                    f"HostKey {d}/host\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\n"
                    "PidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "AllowTcpForwarding yes\nX11Forwarding no\nPrintMotd no\nLogLevel ERROR\n")
        # sshd (as root) needs /run/sshd: a tmpfs on /run in a mount namespace of its own
        # gives it one without touching the machine's /run.
        script = 'mount -t tmpfs fogbench /run && mkdir -m 755 /run/sshd && exec "$@"'
        self.sshd_log = os.path.join(d, "sshd.log")
        with open(self.sshd_log, "wb") as log:
            self.sshd = ctx.spawn(lab.nodes[1].prefix + [
                "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", conf],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.sshd.poll() is None and accepts_in(lab.nodes[1], ip_of(1),
                                                                       SSHD_PORT),
                       timeout=20, interval=0.02)
        except TimeoutError:
            with open(self.sshd_log, errors="replace") as f:
                raise RuntimeError(f"sshd did not start: {f.read()[-300:].strip()}")
        self.ssh_log = os.path.join(d, "ssh.log")
        with open(self.ssh_log, "wb") as log:
            self.ssh = ctx.spawn(lab.nodes[0].prefix + [
                "ssh", "-N", "-v", "-F", "/dev/null", "-i", os.path.join(d, "client"),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={d}/known_hosts", "-o", "StrictHostKeyChecking=no",
                "-o", "ExitOnForwardFailure=yes", "-p", str(SSHD_PORT),
                "-L", f"127.0.0.1:{SSH_PP}:127.0.0.1:{PP_PORT}",
                "-L", f"127.0.0.1:{SSH_TP}:127.0.0.1:{TP_PORT}", f"root@{ip_of(1)}"],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.ssh.poll() is None and accepts_in(lab.nodes[0], "127.0.0.1",
                                                                      SSH_TP),
                       timeout=20, interval=0.02)
        except TimeoutError:
            raise RuntimeError(f"ssh -L did not come up: {self.log_tail()}")

    def log_tail(self):
        out = []
        for p in (self.ssh_log, self.sshd_log):
            with open(p, errors="replace") as f:
                out.append(f.read()[-300:].strip())
        return " | ".join(out)

    def cipher(self):
        with open(self.ssh_log, errors="replace") as f:
            m = re.search(r"kex: client->server cipher: (\S+) MAC: (\S+)", f.read())
        return (m.group(1) + ("" if m.group(2) == "<implicit>" else f" + {m.group(2)}")
                if m else "?")

    def pids(self):
        return [self.ssh.pid] + descendants(self.sshd.pid)

    def stop(self):
        # the client first: its session processes in B then exit on the closed connection
        self.ctx.kill_all([self.ssh])
        try:
            wait_until(lambda: not descendants(self.sshd.pid), timeout=5, interval=0.02)
        except TimeoutError:
            for pid in descendants(self.sshd.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.ctx.kill_all([self.sshd])


class Mesh:
    """meshd in A, B and C, one mesh; the two services declared, the A-C path cut."""

    def __init__(self, ctx, lab):
        self.ctx, self.lab = ctx, lab
        self.dir = ctx.tempdir()
        key = subprocess.run([ctx.meshctl, "keygen"], capture_output=True, text=True,
                             check=True).stdout
        self.key = os.path.join(self.dir, "mesh.key")
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, key.encode())
        os.close(fd)
        self.names = [f"fb{os.getpid()}{x}" for x in "abc"]
        self.procs = []
        for i, nm in enumerate(self.names):
            d = os.path.join(self.dir, nm)
            cmd = lab.nodes[i].prefix + [
                ctx.meshd, "--name", nm, "--data-dir", d, "--bind", f"{ip_of(i)}:{MESH_PORT}",
                "--key-file", self.key, "--log-level", "info"]
            if i:
                cmd += ["--join", f"{ip_of(0)}:{MESH_PORT}"]
            with open(os.path.join(self.dir, f"{nm}.log"), "ab") as log:
                self.procs.append(ctx.spawn(cmd, stdout=log, stderr=subprocess.STDOUT))
        self.wait(lambda: all(self.all_alive(i) for i in range(3)), "the 3 nodes to join")

    def sock(self, i):
        return os.path.join(self.dir, self.names[i], "api.sock")

    def api(self, i, url):
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"a meshd exited ({p.returncode}); logs in {self.dir}")
        return unix_http_json(self.sock(i), url) or {}

    def wait(self, cond, what):
        try:
            wait_until(cond, timeout=SETUP_TIMEOUT, interval=0.1)
        except TimeoutError:
            raise TimeoutError(f"mesh: {what} took over {SETUP_TIMEOUT} s")

    def all_alive(self, i):
        ms = self.api(i, "/v1/members").get("members", [])
        return len(ms) == 3 and all(m.get("status") == "alive" for m in ms)

    def ctl(self, i, *args):
        """A write through node i, retried until its Raft knows a leader."""
        last = []

        def ok():
            r = subprocess.run([self.ctx.meshctl, "--socket", self.sock(i), *args],
                               capture_output=True, text=True, timeout=30)
            last[:] = [r.stderr.strip()]
            return r.returncode == 0
        try:
            wait_until(ok, timeout=SETUP_TIMEOUT, interval=0.2)
        except TimeoutError:
            raise RuntimeError(f"meshctl {' '.join(args)}: {last[0] if last else '?'}")

    def route(self, i, dest):
        for r in self.api(i, "/v1/routes").get("routes", []):
            if r.get("node") == dest:
                return r
        return None

    def endpoints_everywhere(self, service):
        for i in range(3):
            svc = self.api(i, "/v1/services")
            svcs = svc.get("services", svc) if isinstance(svc, dict) else svc
            s = {x.get("name"): x for x in svcs}.get(service)
            if not s or not s.get("endpoints"):
                return False
        return True

    def listening(self, i, service):
        ls = (self.api(i, "/v1/status").get("tunnels") or {}).get("listeners") or []
        return any(x.get("service") == service for x in ls)

    def setup_services(self):
        a, b, c = self.names
        for svc, node, port in (("pp1", b, PP_PORT), ("tp1", b, TP_PORT),
                                ("pp2", c, PP_PORT), ("tp2", c, TP_PORT)):
            self.ctl(0, "service", "expose", svc, "--target", f"127.0.0.1:{port}", "--node",
                     node)
        for svc, port in (("pp1", MESH1_PP), ("tp1", MESH1_TP), ("pp2", MESH2_PP),
                          ("tp2", MESH2_TP)):
            self.ctl(0, "service", "connect", svc, "--listen", f"127.0.0.1:{port}", "--node", a)
        self.wait(lambda: all(self.endpoints_everywhere(s) for s in ("pp1", "tp1", "pp2", "tp2")),
                  "every node to know the endpoints")
        self.lab.cut(0, 2)

        def two_hops():
            r = self.route(0, c)
            return r and r.get("reachable") and r.get("next_hop") == b and r.get("hops") == 2
        self.wait(two_hops, "A to route to C through B")
        self.wait(lambda: all(self.listening(0, s) for s in ("pp1", "tp1", "pp2", "tp2")),
                  "A to listen for the services")
        for port in (MESH1_PP, MESH1_TP, MESH2_PP, MESH2_TP):
            self.wait(lambda: accepts_in(self.lab.nodes[0], "127.0.0.1", port),
                      f"A's listener on {port} to accept")

    def link_cipher(self):
        """The transport cipher of A's link with B, as A's /v1/routes shows it."""
        for x in self.api(0, "/v1/routes").get("neighbours", []):
            if x.get("node") == self.names[1]:
                return x.get("cipher") or "unknown"
        return "unknown"

    def rss_kib(self):
        out = []
        for p in self.procs:
            with open(f"/proc/{p.pid}/status") as f:
                out += [int(x.split()[1]) for x in f if x.startswith("VmRSS:")]
        return out

    def stop(self):
        self.ctx.kill_all(self.procs)


# ---- the load ----

PCT = re.compile(r"---> percentile\s+([\d.]+)\s*=\s*([\d.]+)")


def latency(ns, host, port):
    """sockperf ping-pong, one connection: {50.0: us, 99.0: us, 99.9: us} (one-way)."""
    r = subprocess.run(ns.prefix + ["sockperf", "ping-pong", "--tcp", "-i", host, "-p",
                                    str(port), "-m", str(LAT_MSG), "-t", str(LAT_SECONDS)],
                       capture_output=True, text=True, timeout=LAT_SECONDS + 30)
    got = {float(p): float(v) for p, v in PCT.findall(r.stdout + r.stderr)}
    if r.returncode != 0 or not {50.0, 99.0, 99.9} <= set(got):
        raise RuntimeError(f"sockperf to {host}:{port}: {(r.stdout + r.stderr)[-400:]}")
    return got


def throughput(ns, host, port, streams, pids=(), settle=None):
    """iperf3 -P streams; returns (bytes/s received, bytes received, CPU ticks of pids: a list
    of (pid, reaped) for cpu_ticks), settle() called before the second reading."""
    before = {p: cpu_ticks(*p) for p in pids}
    r = subprocess.run(ns.prefix + ["iperf3", "-c", host, "-p", str(port), "-t",
                                    str(TP_SECONDS), "-P", str(streams), "-J"],
                       capture_output=True, text=True, timeout=TP_SECONDS + 60)
    if settle:
        settle()
    ticks = sum(max(0, cpu_ticks(*p) - before[p]) for p in pids)
    try:
        end = json.loads(r.stdout)["end"]["sum_received"]
        return end["bits_per_second"] / 8, end["bytes"], ticks
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(f"iperf3 to {host}:{port} -P {streams}: {r.stdout[-400:]}"
                           f"{r.stderr[-200:]}")


def run(ctx, sc):
    why = netns_usable()
    missing = [t for t in TOOLS if not shutil.which(t)]
    if not shutil.which("sshd") and not os.access("/usr/sbin/sshd", os.X_OK):
        missing.append("sshd")
    if why or missing:
        raise RuntimeError(why or f"missing {', '.join(missing)} (scripts/install-deps.sh)")
    hz = os.sysconf("SC_CLK_TCK")
    lab = Lab(ctx)
    A, B, C = lab.nodes
    for ns in (B, C):
        ctx.spawn(ns.prefix + ["sockperf", "server", "--tcp", "-i", "0.0.0.0", "-p",
                               str(PP_PORT)])
        ctx.spawn(ns.prefix + ["iperf3", "-s", "-p", str(TP_PORT)])
    for ns, i in ((B, 1), (C, 2)):
        for port in (PP_PORT, TP_PORT):
            wait_until(lambda: accepts_in(ns, ip_of(i), port), timeout=20, interval=0.02)
    socat = [ctx.spawn(A.prefix + ["socat", f"TCP-LISTEN:{lp},bind=127.0.0.1,reuseaddr,fork",
                                   f"TCP:{ip_of(1)}:{sp}"])
             for lp, sp in ((SOCAT_PP, PP_PORT), (SOCAT_TP, TP_PORT))]
    for port in (SOCAT_PP, SOCAT_TP):
        wait_until(lambda: accepts_in(A, "127.0.0.1", port), timeout=20, interval=0.02)
    ssh = mesh = None
    try:
        ssh = Ssh(ctx, lab)
        mesh = Mesh(ctx, lab)
        mesh.setup_services()
        m = mesh.procs
        # name, host, latency port, throughput port, forwarding processes as (pid, reaped),
        # what to wait for before reading their CPU. socat forks a child per connection: its
        # CPU is the parent's cutime + cstime once the children are gone. ssh's session
        # processes in B live as long as the ssh client.
        socat_done = (lambda: wait_until(
            lambda: not any(descendants(s.pid) for s in socat), timeout=10, interval=0.01))
        paths = [
            ("direct TCP", ip_of(1), PP_PORT, TP_PORT, [], None),
            ("socat", "127.0.0.1", SOCAT_PP, SOCAT_TP, [(s.pid, True) for s in socat],
             socat_done),
            ("ssh -L", "127.0.0.1", SSH_PP, SSH_TP, [(p, False) for p in ssh.pids()], None),
            ("mesh 1 hop", "127.0.0.1", MESH1_PP, MESH1_TP, [(p.pid, False) for p in m[:2]],
             None),
            ("mesh 2 hops", "127.0.0.1", MESH2_PP, MESH2_TP, [(p.pid, False) for p in m], None),
        ]
        nproc = {"socat": 1, "ssh -L": 2, "mesh 1 hop": 2, "mesh 2 hops": 3}
        res = {p[0]: {"p50": [], "p99": [], "p999": [], "tp1": [], "tp8": [], "cpu": []}
               for p in paths}
        for run_i in range(ctx.runs + 1):  # the first run warms everything up, not counted
            # One measurement at a time over every path, back to back, in alternating order
            # (ABC, CBA, ...): each path is measured within seconds of ssh -L's, so the same-run
            # ratios below hold while the machine's speed drifts (shared cores, steal time).
            order = paths if run_i % 2 == 0 else paths[::-1]
            got = {p[0]: {} for p in paths}
            for name, host, pp, tp, pids, settle in order:
                lat = latency(A, host, pp)
                got[name].update(p50=lat[50.0], p99=lat[99.0], p999=lat[99.9])
            for name, host, pp, tp, pids, settle in order:
                bps1, nbytes, ticks = throughput(A, host, tp, 1, pids, settle)
                got[name]["tp1"] = bps1 / 1e9
                if pids:
                    got[name]["cpu"] = ticks / hz / (nbytes / (1 << 30)) / nproc[name]
            for name, host, pp, tp, pids, settle in order:
                bps8, _, _ = throughput(A, host, tp, STREAMS)
                got[name]["tp8"] = bps8 / 1e9
            if run_i:
                for name, vals in got.items():
                    for k, v in vals.items():
                        res[name][k].append(v)
            print(f"   run {run_i}/{ctx.runs} done" + (" (warm-up)" if not run_i else ""),
                  flush=True)
        report(sc, res, ssh.cipher(), mesh.link_cipher(), mesh.rss_kib(), ctx.runs)
    finally:
        if mesh:
            mesh.stop()
        if ssh:
            ssh.stop()


def paired_ratio(res, name, key):
    """Median over runs of name's figure / ssh -L's in the same run."""
    return median([a / b for a, b in zip(res[name][key], res["ssh -L"][key]) if b])


def report(sc, res, cipher, link_cipher, rss, runs):
    order = ["direct TCP", "socat", "ssh -L", "mesh 1 hop", "mesh 2 hops"]

    def rows(metric, key, unit):
        for name in order:
            xs = res[name][key]
            if not xs:
                continue
            r = row(sc, metric, name, median(xs), unit)
            if name != "ssh -L":
                r["ratio"] = paired_ratio(res, name, key)

    rows(f"latency p50, {LAT_MSG} B ping-pong (one-way)", "p50", "us")
    rows(f"latency p99, {LAT_MSG} B ping-pong (one-way)", "p99", "us")
    rows(f"latency p99.9, {LAT_MSG} B ping-pong (one-way)", "p999", "us")
    rows("throughput, 1 stream", "tp1", "GB/s")
    rows(f"throughput, {STREAMS} streams", "tp8", "GB/s")
    rows("CPU per GiB per forwarding process, 1 stream", "cpu", "s")
    tp_ratio = paired_ratio(res, "mesh 1 hop", "tp1")
    lat_ratio = paired_ratio(res, "mesh 1 hop", "p50")
    per_run = ", ".join(f"{a / b:.2f}" for a, b in zip(res["mesh 1 hop"]["tp1"],
                                                        res["ssh -L"]["tp1"]))
    sc["notes"] += [
        f"{runs} runs after a warm-up run; in each, every measurement over all paths back to back"
        f" (order reversed every other run). Figures: medians over the runs; ratios: medians of"
        f" the same-run ratios to ssh -L (1-hop 1-stream throughput per run: {per_run}). Latency: sockperf ping-pong --tcp -m {LAT_MSG}, {LAT_SECONDS} s, "
        f"one-way (half the round trip). Throughput: iperf3 -t {TP_SECONDS} -P 1 / -P {STREAMS},"
        f" GB = 1e9 bytes received by the server.",
        f"Topology: 3 network namespaces on one bridge (veth, MTU 1500); client in A, server in "
        f"B (1 hop) or C (2 hops, A-C dropped by iptables). ssh -L cipher (default, "
        f"negotiated): {cipher}; the mesh's links (negotiated, --link-cipher auto): "
        f"{link_cipher} (libsodium, Noise).",
        "CPU: utime + stime across the 1-stream run of socat (1 process), ssh + sshd's session "
        "processes (2), the meshd on the path (2 at 1 hop, 3 at 2 hops), per GiB received, "
        "divided by that number of processes.",
        f"meshd RSS after the runs: {', '.join(f'{k / 1024:.1f}' for k in rss)} MiB.",
        f"Goal: mesh 1-hop throughput {tp_ratio:.2f}x ssh -L (goal >= 1.2x: "
        f"{'met' if tp_ratio >= 1.2 else 'missed'}); 1-hop p50 latency {lat_ratio:.2f}x ssh -L "
        f"(goal <= 1.0x: {'met' if lat_ratio <= 1.0 else 'missed'}).",
    ]
