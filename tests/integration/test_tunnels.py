"""Routing and tunnels (issue 6) between nodes that cannot all reach each other.

Each node runs in a network namespace of its own (the `lab` fixture: a bridge namespace and
node namespaces made by the test, deleted at teardown); the direct path between two of them is
blocked with iptables inside their namespaces, never in the machine's own.
"""

from conftest import TIMEOUT, wait_for


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
    assert route_is(b, a.name, a.name, 1) and route_is(b, c.name, c.name, 1)
    nbrs = {x["node"]: x for x in a.ctl_json("routes")["neighbours"]}
    assert not nbrs[c.name]["up"] and nbrs[b.name]["up"], nbrs
    lab.heal()
    wait_for(lambda: route_is(a, c.name, c.name, 1), timeout=TIMEOUT,
             what="the direct route back once the link is restored")
    out = a.ctl("routes").stdout
    assert "NEXT_HOP" in out and c.name in out, out
