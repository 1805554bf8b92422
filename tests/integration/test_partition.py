"""A network partition splits the mesh and the mesh heals when it is removed (issue 3).

Each node runs in a network namespace of its own, all joined by a bridge in one more
namespace; every name carries this process's pid so that parallel runs do not clash, and
everything is deleted at teardown, whatever happened. The partition is iptables DROP rules
inside the node namespaces (never in the machine's own namespace).
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import TIMEOUT, summarize, wait_views

SUBNET = "10.231.0"


def sh(*cmd, check=True):
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Lab:
    """A bridge namespace and n node namespaces, node i at SUBNET.(i+1)."""

    def __init__(self, n):
        self.tag = f"fmit{os.getpid()}"
        self.bridge_ns = f"{self.tag}-br"
        self.node_ns = [f"{self.tag}-n{i}" for i in range(n)]
        self.created = []

    def ip_of(self, i):
        return f"{SUBNET}.{i + 1}"

    def add_ns(self, name):
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def setup(self):
        self.add_ns(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.node_ns):
            self.add_ns(ns)
            # Both ends are made inside our namespaces: the machine's own is never touched.
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
               "netns", self.bridge_ns)
            sh("ip", "-n", ns, "addr", "add", f"{self.ip_of(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", self.bridge_ns, "link", "set", f"p{i}", "master", "br0")
            sh("ip", "-n", self.bridge_ns, "link", "set", f"p{i}", "up")

    def iptables(self, i, *args):
        sh("ip", "netns", "exec", self.node_ns[i], "iptables", "-w", *args)

    def cut(self, group_a, group_b):
        """Drops all traffic between the two groups (rules on both sides)."""
        for side, other in ((group_a, group_b), (group_b, group_a)):
            for i in side:
                for j in other:
                    self.iptables(i, "-A", "INPUT", "-s", self.ip_of(j), "-j", "DROP")
                    self.iptables(i, "-A", "OUTPUT", "-d", self.ip_of(j), "-j", "DROP")

    def heal(self):
        for i in range(len(self.node_ns)):
            self.iptables(i, "-F", "INPUT")
            self.iptables(i, "-F", "OUTPUT")

    def teardown(self):
        errors = []
        for ns in reversed(self.created):
            r = sh("ip", "netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append(f"{ns}: {r.stderr.strip()}")
        self.created = []
        left = [ns for ns in sh("ip", "netns", "list").stdout.split()
                if ns.startswith(self.tag + "-")]
        return errors + [f"namespace {ns} still exists" for ns in left]


def lab_available():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip") or not shutil.which("iptables"):
        return "needs ip (iproute2) and iptables"
    probe = f"fmit{os.getpid()}-probe"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns unavailable: {r.stderr.strip()}"
    try:
        r = sh("ip", "netns", "exec", probe, "iptables", "-w", "-L", "INPUT", check=False)
        if r.returncode != 0:
            return f"iptables unusable inside a namespace: {r.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


@pytest.fixture
def lab(request, mesh):
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


def test_partition_splits_and_heals(mesh, lab):
    key = mesh.keygen()
    nodes = []
    for i, ns in enumerate(lab.node_ns):
        join = [] if i == 0 else [nodes[0].addr]
        nodes.append(mesh.node(f"p{i}", host=lab.ip_of(i), netns=ns, key_file=key,
                               join=join).start())
    mesh.wait_all_alive(nodes, what="the nodes in namespaces to join")
    for n in nodes:
        assert n.status()["node"]["addr"].startswith(SUBNET + ".")

    a_idx, b_idx = [0, 1, 2], [3, 4]
    side_a = [nodes[i] for i in a_idx]
    side_b = [nodes[i] for i in b_idx]
    names_a = {n.name for n in side_a}
    names_b = {n.name for n in side_b}
    lab.cut(a_idx, b_idx)

    def split(vs):
        for o, v in vs.items():
            mine, theirs = (names_a, names_b) if o in names_a else (names_b, names_a)
            if not all(v[x]["status"] == "dead" for x in theirs):
                return False
            if not all(v[x]["status"] == "alive" for x in mine):
                return False
        return True

    def own_side_dead(vs):
        for o, v in vs.items():
            mine = names_a if o in names_a else names_b
            for x in mine:
                if v[x]["status"] in ("dead", "left"):
                    return f"{o} reports {x}, on its own side of the partition, {v[x]['status']}"
        return None

    # Detection takes longer than for one kill -9: the small side has no third member to
    # confirm a suspicion (Lifeguard then keeps the longest suspicion timeout) and its failed
    # probes raise the local health score, which slows its probing. Hence twice the timeout.
    t0 = time.monotonic()
    wait_views(nodes, split, forbid=own_side_dead, timeout=TIMEOUT * 2,
               what="each side to report the other side dead")
    t1 = time.monotonic()
    lab.heal()
    vs = mesh.wait_all_alive(nodes, timeout=TIMEOUT * 2,
                             what="all nodes alive everywhere after the partition healed")
    print(f"split seen in {t1 - t0:.1f}s, healed in {time.monotonic() - t1:.1f}s:\n"
          + summarize(vs))
    for n in nodes:
        st = n.status()
        assert st["members"] == {"alive": 5, "suspect": 0, "dead": 0, "left": 0}, (n.name, st)
