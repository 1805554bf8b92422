"""Routing and tunnels (issue 6) between nodes that cannot all reach each other.

Each node runs in a network namespace of its own (the `lab` fixture: a bridge namespace and
node namespaces made by the test, deleted at teardown); the direct path between two of them is
blocked with iptables inside their namespaces, never in the machine's own.
"""

import os
import subprocess
import sys
import time

import pytest

from conftest import TIMEOUT, free_port, wait_for


def routes(node):
    return {r["node"]: r for r in node.ctl_json("routes")["routes"]}


def start_lab_mesh(mesh, lab, count, prefix):
    key = mesh.keygen()
    nodes = []
    for i in range(count):
        join = [] if i == 0 else [nodes[0].addr]
        nodes.append(mesh.node(f"{prefix}{i}", host=lab.ip_of(i), netns=lab.node_ns[i],
                               key_file=key, join=join).start())
    mesh.wait_all_alive(nodes, what="the nodes in namespaces to join")
    return nodes


def route_is(node, dest, next_hop, hops):
    r = routes(node).get(dest)
    return r is not None and r["reachable"] and r["next_hop"] == next_hop and r["hops"] == hops


def knows_link_down(node, other):
    """node has found that other no longer answers it directly. A route through a third node
    alone does not say so: while the pings over a cut link have not failed yet, noise in the
    RTTs can make the longer path the shorter one, and the next wobble takes the cut link again
    (a tunnel opened then waits for a black hole)."""
    nbrs = {x["node"]: x for x in node.ctl_json("routes")["neighbours"]}
    return other.name in nbrs and not nbrs[other.name]["up"]


def test_routes_go_around_a_blocked_link_and_come_back(mesh, lab):
    a, b, c = start_lab_mesh(mesh, lab, 3, "rt")
    # Direct links everywhere at first.
    for x, y in ((a, c), (c, a), (a, b)):
        wait_for(lambda: route_is(x, y.name, y.name, 1), timeout=TIMEOUT,
                 what=f"{x.name} to route to {y.name} directly")
    lab.cut([0], [2])
    wait_for(lambda: route_is(a, c.name, b.name, 2) and route_is(c, a.name, b.name, 2),
             timeout=TIMEOUT, what="a and c to route to each other through b")
    # b still reaches both directly; a's neighbour list says c is down.
    wait_for(lambda: route_is(b, a.name, a.name, 1) and route_is(b, c.name, c.name, 1),
             timeout=TIMEOUT, what="b to route to a and c directly")

    def nbrs_ok():
        nbrs = {x["node"]: x for x in a.ctl_json("routes")["neighbours"]}
        return not nbrs[c.name]["up"] and nbrs[b.name]["up"]
    wait_for(nbrs_ok, timeout=TIMEOUT, what="a's neighbour list to show c down, b up")
    lab.heal()
    wait_for(lambda: route_is(a, c.name, c.name, 1), timeout=TIMEOUT,
             what="the direct route back once the link is restored")
    out = a.ctl("routes").stdout
    assert "NEXT_HOP" in out and c.name in out, out


TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcptool.py")


class Tool:
    """tcptool.py processes (in a namespace when given); killed at the end of the test."""

    def __init__(self):
        self.procs = []

    def start(self, *args, netns=None):
        cmd = [sys.executable, TOOL, *map(str, args)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "listening", f"{args} did not start"
        return p

    def run(self, *args, netns=None, timeout=300):
        cmd = [sys.executable, TOOL, *map(str, args)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def tool():
    t = Tool()
    yield t
    t.close()


def write(node, *args):
    """A write, once the node's Raft knows a leader."""
    wait_for(lambda: node.ctl(*args, check=False).returncode == 0, timeout=TIMEOUT,
             what=f"meshctl {' '.join(args)} on {node.name}")


def known_everywhere(nodes, service, endpoints=1):
    """Every node's replica of the state has the service's endpoints (a tunnel's last hop
    looks its endpoint up in its own replica)."""
    def ok():
        for n in nodes:
            s = {x["name"]: x for x in n.ctl_json("get", "services")}.get(service)
            if not s or len(s["endpoints"]) != endpoints:
                return False
        return True
    wait_for(ok, timeout=TIMEOUT, what=f"every node to know the endpoints of {service}")


def listening(node, service):
    ls = node.status()["tunnels"]["listeners"]
    return any(x["service"] == service for x in ls)


def test_service_through_the_mesh_on_loopback(mesh, tool):
    a, b, c = mesh.start_cluster(3, prefix="tl")
    sport, lport = free_port(), free_port()
    tool.start("serve", "127.0.0.1", sport)
    write(a, "service", "expose", "sink", "--target", f"127.0.0.1:{sport}")
    write(a, "service", "connect", "sink", "--listen", f"127.0.0.1:{lport}", "--node", c.name)
    wait_for(lambda: listening(c, "sink"), timeout=TIMEOUT, what="c to listen for sink")
    known_everywhere((a, b, c), "sink")
    wait_for(lambda: routes(c)[a.name]["reachable"], timeout=TIMEOUT, what="c's route to a")
    r = tool.run("send", "127.0.0.1", lport, 16 << 20, 1)
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr
    st = c.status()["tunnels"]
    assert st["opened"] >= 1 and st["bytes_up"] >= 16 << 20, st


def log_has(node, text):
    return text in node.read_log()


def rss_kib(node):
    with open(f"/proc/{node.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_tunnel_around_a_blocked_link(mesh, lab, tool):
    a, b, c = start_lab_mesh(mesh, lab, 3, "tn")
    na, nc = lab.node_ns[0], lab.node_ns[2]
    # The service runs on c, a client on a. The declarations go first, so that the test is
    # about the tunnel alone (test_raft_relay.py covers declarations made after the cut).
    tool.start("serve", "127.0.0.1", 7000, netns=nc)
    write(a, "service", "expose", "sink", "--target", "127.0.0.1:7000", "--node", c.name)
    write(a, "service", "connect", "sink", "--listen", "127.0.0.1:7001", "--node", a.name)
    write(a, "service", "connect", "ghost", "--listen", "127.0.0.1:7002", "--node", a.name)
    known_everywhere((a, b, c), "sink")
    # Then the direct path goes: the only one left is through b, once a and c know it.
    lab.cut([0], [2])
    wait_for(lambda: knows_link_down(a, c) and knows_link_down(c, a), timeout=TIMEOUT,
             what="a and c to find their direct link down")
    wait_for(lambda: route_is(a, c.name, b.name, 2) and route_is(c, a.name, b.name, 2) and
             route_is(b, c.name, c.name, 1), timeout=TIMEOUT,
             what="a and c to route to each other through b")
    wait_for(lambda: listening(a, "sink") and listening(a, "ghost"), timeout=TIMEOUT,
             what="a to listen for its services")
    # 1 GiB arrives intact (the server checks the SHA-256 of what it got).
    r = tool.run("send", "127.0.0.1", 7001, 1 << 30, 7, netns=na, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr
    assert b.status()["tunnels"]["bytes_up"] >= 1 << 30, "b relayed it"
    # Many connections at once.
    r = tool.run("many", "127.0.0.1", 7001, 64, 256 << 10, netns=na)
    assert r.returncode == 0 and r.stdout.strip() == "ok 64", r.stdout + r.stderr
    # A service nobody provides: refused, and the reason logged.
    r = tool.run("send", "127.0.0.1", 7002, 1024, 1, netns=na)
    assert r.returncode != 0, r.stdout
    wait_for(lambda: log_has(a, "tunnel refused: service ghost has no endpoints"),
             timeout=TIMEOUT, what="a to log why it refused ghost")
    # Without b there is no path: a clear failure, logged.
    b.stop()
    wait_for(lambda: not routes(a)[c.name]["reachable"], timeout=TIMEOUT,
             what="a to see c unreachable")
    r = tool.run("send", "127.0.0.1", 7001, 1024, 1, netns=na)
    assert r.returncode != 0, r.stdout
    wait_for(lambda: log_has(a, "none of its 1 endpoints is on a reachable node"),
             timeout=TIMEOUT, what="a to log why it refused sink")
    # The direct path back: the service works again.
    lab.heal()
    wait_for(lambda: route_is(a, c.name, c.name, 1), timeout=TIMEOUT,
             what="the direct route once the link is restored")
    r = tool.run("send", "127.0.0.1", 7001, 4 << 20, 3, netns=na)
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr


def test_slow_reader_keeps_memory_bounded(mesh, lab, tool):
    a, b, c = start_lab_mesh(mesh, lab, 3, "sr")
    na, nc = lab.node_ns[0], lab.node_ns[2]
    tool.start("source", "127.0.0.1", 7000, 1 << 30, netns=nc)
    write(a, "service", "expose", "firehose", "--target", "127.0.0.1:7000", "--node", c.name)
    write(a, "service", "connect", "firehose", "--listen", "127.0.0.1:7001", "--node", a.name)
    known_everywhere((a, b, c), "firehose")
    lab.cut([0], [2])
    wait_for(lambda: knows_link_down(a, c), timeout=TIMEOUT, what="a to find its link to c down")
    # b must know its own link to c too: a tunnel opened before that is refused at b.
    wait_for(lambda: route_is(a, c.name, b.name, 2) and route_is(b, c.name, c.name, 1) and
             listening(a, "firehose"), timeout=TIMEOUT,
             what="a to listen, with a route through b, and b to route to c")
    before = {n.name: rss_kib(n) for n in (a, b, c)}
    # A fast writer (1 GiB offered) and a reader that takes 16 KiB every 50 ms.
    p = subprocess.Popen([*("ip netns exec".split()), na, sys.executable, TOOL, "slowread",
                          "127.0.0.1", "7001", "8"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    peak = dict(before)
    while p.poll() is None:
        for n in (a, b, c):
            peak[n.name] = max(peak[n.name], rss_kib(n))
        time.sleep(0.2)
    out, errs = p.communicate()
    assert p.returncode == 0 and out.startswith("read "), (out + errs + a.read_log()[-3000:] +
                                                           b.read_log()[-3000:])
    assert int(out.split()[1]) > 0, out
    # Each hop holds at most a link window per direction: no node grows by more than a few MiB
    # (the sanitizer build's own allocator overhead included).
    grown = {k: peak[k] - before[k] for k in peak}
    assert all(g < 32 * 1024 for g in grown.values()), (before, peak)
