"""Microservices run in a real container engine (issue 5, the part that exists so far).

Needs the private Podman that scripts/test.sh starts (scripts/engine.sh) and names in
FOGMESH_ENGINE_SOCKET; skipped without it. Several meshd share the one engine, told apart by
the fogmesh.node label, so node names carry this process's pid; every container the test's
nodes made is removed at teardown.
"""

import http.client
import json
import os
import socket
import subprocess
import urllib.parse

import pytest

from conftest import MESHCTL, TIMEOUT, wait_for

ENGINE = os.environ.get("FOGMESH_ENGINE_SOCKET")  # a path, or a unix:// URL
if ENGINE and ENGINE.startswith("unix://"):
    ENGINE = ENGINE[len("unix://"):]
pytestmark = pytest.mark.skipif(not ENGINE, reason="no container engine: run scripts/test.sh, "
                                "or scripts/engine.sh start DIR and set FOGMESH_ENGINE_SOCKET")


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("engine", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def engine(method, path, body=None):
    c = UnixHTTP(ENGINE)
    c.request(method, "/v1.41" + path, body=body)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data.strip() else None)


def containers_of(prefix):
    """Our containers: {(node, app, ms, replica): (id, state)}."""
    filt = urllib.parse.quote(json.dumps({"label": ["fogmesh.node"]}))
    _, arr = engine("GET", f"/containers/json?all=true&filters={filt}")
    out = {}
    for c in arr:
        lab = c["Labels"]
        if lab.get("fogmesh.node", "").startswith(prefix):
            key = (lab["fogmesh.node"], lab["fogmesh.app"], lab["fogmesh.microservice"],
                   int(lab["fogmesh.replica"]))
            assert key not in out, f"two containers for {key}"
            out[key] = (c["Id"], c["State"])
    return out


@pytest.fixture
def prefix():
    p = f"rt{os.getpid()}x"
    yield p
    for _, (cid, _) in containers_of(p).items():
        engine("DELETE", f"/containers/{cid}?force=true")


def spec(name, env="one", replicas=2):
    return json.dumps({"kind": "Application", "name": name, "microservices": [
        {"name": "worker", "image": "localhost/bbox:latest", "replicas": replicas,
         "command": ["/bin/sh", "-c", "while true; do sleep 1; done"], "env": {"MODE": env},
         "resources": {"memory": "32Mi", "cpus": 0.25}}]})


def deploy(node, text):
    r = subprocess.run([MESHCTL, "--socket", node.socket, "deploy", "-f", "-"], input=text,
                       capture_output=True, text=True, timeout=30)
    return r.stdout if r.returncode == 0 else None


def placements(node):
    return {(m["app"], m["name"], m["replica"]): m for m in node.ctl_json("get", "microservices")}


def running_as_placed(nodes, prefix, app, count):
    """Every replica of app runs, once, on the node it is placed on; returns {key: id}."""
    pl = placements(nodes[0])
    mine = {k: v for k, v in pl.items() if k[0] == app}
    if len(mine) != count or any(not v.get("node") for v in mine.values()):
        return None
    seen = containers_of(prefix)
    ids = {}
    for (a, ms, rep), v in mine.items():
        c = seen.get((v["node"], a, ms, rep))
        if not c or c[1] != "running":
            return None
        ids[(a, ms, rep)] = c[0]
    if len([k for k in seen if k[1] == app]) != count:
        return None
    return ids


def test_deploy_runs_containers_where_placed_update_recreates_delete_removes(mesh, prefix):
    nodes = mesh.start_cluster(3, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    wait_for(lambda: all(n["engine"] == "available" for n in nodes[0].ctl_json("get", "nodes")),
             timeout=TIMEOUT, what="every node to report its engine")
    app = f"{prefix}app"
    wait_for(lambda: deploy(nodes[1], spec(app)), timeout=TIMEOUT, what="a leader to deploy to")
    ids = wait_for(lambda: running_as_placed(nodes, prefix, app, 2), timeout=TIMEOUT,
                   what="both replicas to run on their nodes")
    # Spread: the two replicas are on different nodes.
    pl = placements(nodes[0])
    assert len({pl[k]["node"] for k in ids}) == 2, pl
    # Observed state reaches every node: each asks the hosting nodes over the mesh.
    for n in nodes:
        wait_for(lambda: all(placements(n)[k]["state"] == "running" for k in ids),
                 timeout=TIMEOUT, what=f"{n.name} to show every replica running")
    # A restart of every meshd adopts the containers: same ids, no duplicates.
    for n in nodes:
        assert n.stop() == 0
    for n in nodes:
        n.start()
    again = wait_for(lambda: running_as_placed(nodes, prefix, app, 2), timeout=TIMEOUT,
                     what="the replicas after the restart")
    assert again == ids, "a restart must adopt, not recreate"
    # A spec change recreates.
    wait_for(lambda: deploy(nodes[2], spec(app, env="two")), timeout=TIMEOUT,
             what="the update to be taken (Raft settles after the restart)")
    new = wait_for(lambda: (lambda r: r if r and set(r.values()).isdisjoint(ids.values())
                            else None)(running_as_placed(nodes, prefix, app, 2)),
                   timeout=TIMEOUT, what="the replicas to be recreated with the new env")
    _, info = engine("GET", f"/containers/{next(iter(new.values()))}/json")
    assert "MODE=two" in info["Config"]["Env"]
    assert info["HostConfig"]["Memory"] == 32 * 1024 * 1024
    # Delete: the containers go.
    nodes[0].ctl("delete", "app", app)
    wait_for(lambda: not any(k[1] == app for k in containers_of(prefix)), timeout=TIMEOUT,
             what="the containers to be removed")
