"""Raft's connections follow the mesh's routes (consensus/transport.h, "Relaying").

Three nodes in network namespaces of their own (the `lab` fixture); the direct path between a
(the leader) and c is blocked with iptables inside their namespaces. b reaches both, so the
routes between a and c go through b, and so must Raft's connections: what a writes reaches c's
replica of the desired state, relayed by b, and the mesh keeps its leader.
"""

from conftest import TIMEOUT, wait_for
from test_tunnels import route_is, start_lab_mesh, write


def raft(node):
    return node.status().get("raft") or {}


def agreed(nodes, leader=None):
    """Every node knows the same leader (leader's name, when given) and three voters."""
    vs = [raft(n) for n in nodes]
    first = vs[0].get("leader")
    return bool(first) and (leader is None or first == leader) and all(
        v.get("leader") == first and len(v.get("voters") or []) == 3 for v in vs)


def relays(node):
    """The node's counters of relayed raft connections (GET /v1/raft)."""
    return node.ctl_json("raft", "peers")["relays"]


def services(node):
    return {s["name"]: s for s in node.ctl_json("get", "services")}


def test_raft_replicates_around_a_blocked_link(mesh, lab):
    a, b, c = start_lab_mesh(mesh, lab, 3, "rr")
    nodes = (a, b, c)
    # a bootstrapped the mesh: it leads, the autopilot made b and c voters.
    wait_for(lambda: agreed(nodes, a.name), timeout=TIMEOUT,
             what="a to lead three voters, known everywhere")
    write(a, "service", "expose", "before", "--target", "127.0.0.1:7000", "--node", c.name)
    wait_for(lambda: "before" in services(c), timeout=TIMEOUT, what="c's replica to have 'before'")

    lab.cut([0], [2])
    wait_for(lambda: route_is(a, c.name, b.name, 2) and route_is(c, a.name, b.name, 2),
             timeout=TIMEOUT, what="a and c to route to each other through b")

    # Writes on a reach c's replica; only b can carry them.
    write(a, "service", "expose", "after", "--target", "127.0.0.1:7000", "--node", c.name)
    write(a, "service", "connect", "after", "--listen", "127.0.0.1:7001", "--node", a.name)
    wait_for(lambda: "after" in services(c) and len(services(c)["after"]["endpoints"]) == 1,
             timeout=TIMEOUT, what="c's replica to have 'after', written on a after the cut")
    assert relays(a)["connects"] >= 1, relays(a)
    assert relays(b)["relayed"] >= 1, relays(b)
    assert relays(c)["accepted"] >= 1, relays(c)
    # A write made on c, forwarded to a leader c cannot reach directly: relayed by b too
    # (whoever leads now; an election may have moved the leadership meanwhile).
    # (While links and routes settle, meshd may answer 503 "retry in a moment": write() does.)
    assert raft(c)["leader"] != c.name, raft(c)
    write(c, "service", "expose", "from-c", "--target", "127.0.0.1:7002", "--node", c.name)
    wait_for(lambda: "from-c" in services(a), timeout=TIMEOUT,
             what="a's replica to have 'from-c', written on c")
    # One leader, known everywhere, and the replicas caught up with it.
    wait_for(lambda: agreed(nodes), timeout=TIMEOUT, what="the mesh to agree on a leader")
    leader_commit = {n.name: raft(n) for n in nodes}[raft(a)["leader"]]["commit_index"]
    wait_for(lambda: all(raft(n)["applied_index"] >= leader_commit for n in nodes),
             timeout=TIMEOUT, what="every replica to apply what the leader committed")

    # The direct path back: raft uses it again, and writes still arrive.
    lab.heal()
    wait_for(lambda: route_is(a, c.name, c.name, 1), timeout=TIMEOUT,
             what="the direct route once the link is restored")
    write(a, "service", "expose", "healed", "--target", "127.0.0.1:7000", "--node", c.name)
    wait_for(lambda: "healed" in services(c), timeout=TIMEOUT, what="c's replica to have 'healed'")
    assert agreed(nodes)
