"""Services (issue 6): declarations in the desired state, the catalog every node derives.

Real meshd processes on loopback; no container engine needed for the declarations.
"""

import json
import subprocess

from conftest import MESHCTL, TIMEOUT, wait_for


def services(node):
    return {s["name"]: s for s in node.ctl_json("get", "services")}


def deploy(node, spec):
    r = subprocess.run([MESHCTL, "--socket", node.socket, "deploy", "-f", "-"],
                       input=json.dumps(spec), capture_output=True, text=True, timeout=30)
    return r


def write(node, *args):
    """A write, once the node's Raft knows a leader (a node that just joined waits to be added)."""
    wait_for(lambda: node.ctl(*args, check=False).returncode == 0, timeout=TIMEOUT,
             what=f"meshctl {' '.join(args)} on {node.name}")


def test_service_declarations_reach_every_node(mesh):
    nodes = mesh.start_cluster(3, prefix="sv")
    a, b, c = nodes
    write(a, "service", "expose", "db", "--target", "127.0.0.1:5432")
    write(b, "service", "expose", "db", "--target", "127.0.0.1:5433", "--node", c.name)
    write(c, "service", "connect", "db", "--listen", "127.0.0.1:15432", "--node", b.name)

    def catalog_everywhere():
        for n in nodes:
            s = services(n).get("db")
            if not s or len(s["endpoints"]) != 2 or len(s["listeners"]) != 1:
                return None
        return s
    s = wait_for(catalog_everywhere, timeout=TIMEOUT, what="every node to list the service")
    assert {(e["node"], e["target"], e["kind"]) for e in s["endpoints"]} == {
        (a.name, "127.0.0.1:5432", "host"), (c.name, "127.0.0.1:5433", "host")}
    assert s["listeners"] == [{"node": b.name, "listen": "127.0.0.1:15432", "kind": "host"}]
    # The same declaration again is unchanged; a new target updates.
    r = a.ctl_json("service", "expose", "db", "--target", "127.0.0.1:5432")
    assert r["result"] == "unchanged", r
    # Bad input: clear errors, nothing stored.
    for args, code, msg in [
            (("service", "expose", "Bad_Name", "--target", "127.0.0.1:1"), 1, "service name"),
            (("service", "expose", "db", "--target", "nowhere"), 1, "target"),
            (("service", "expose", "db", "--target", "127.0.0.1:1", "--node", "zz"), 1,
             "no node 'zz'"),
            (("service", "connect", "db"), 2, "service"),
            (("service", "disconnect", "other", "--listen", "127.0.0.1:15432", "--node", b.name),
             1, "listener of service db")]:
        r = a.ctl(*args, check=False)
        assert r.returncode == code and msg in r.stderr, (args, r.stderr)
    # Microservices declare them too: expose and connect become endpoints and listeners of
    # the nodes the replicas are placed on (without an engine they stay pending: none).
    r = deploy(a, {"kind": "Application", "name": "shop", "microservices": [
        {"name": "api", "image": "x", "expose": [{"name": "api", "port": 8080}],
         "connect": [{"service": "db", "port": 5432}]}]})
    assert r.returncode == 0, r.stderr
    r = deploy(a, {"kind": "Application", "name": "bad", "microservices": [
        {"name": "api", "image": "x", "expose": [{"name": "api", "port": 80}],
         "connect": [{"service": "db", "port": 80}]}]})
    assert r.returncode != 0 and "also a connect port" in r.stderr, r.stderr
    # Removal.
    a.ctl("service", "unexpose", "db")
    b.ctl("service", "unexpose", "db", "--node", c.name)
    a.ctl("service", "disconnect", "db", "--listen", "127.0.0.1:15432", "--node", b.name)
    wait_for(lambda: all("db" not in services(n) for n in nodes), timeout=TIMEOUT,
             what="the service to be gone everywhere")
    r = a.ctl("service", "unexpose", "db", check=False)
    assert r.returncode == 1 and "not found" in r.stderr, r.stderr
