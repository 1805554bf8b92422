"""Rescheduling and refusals against a real container engine (issue 5).

Needs the private engine that scripts/test.sh starts (scripts/engine.sh, Podman or Docker) and
names in FOGMESH_ENGINE_SOCKET; skipped without it. Several meshd share that engine, told apart
by the fogmesh.node label, so node names carry this process's pid; every container the test's
nodes made is removed at teardown (test_runtime's `prefix` fixture does it).

- kill -9 of the node that hosts a microservice: after --reschedule-after (2 s here) the replica
  runs on another node, in the engine, under that node's label; one pinned to the dead node
  with placement.node waits for it instead.
- bad specs: meshctl deploy fails with the path of each problem, and nothing is stored.
- a node whose engine stops: `get nodes` says so, its replica moves, and nothing new goes there.
  That node gets an engine of its own (scripts/engine.sh in a temp dir), stopped by the test.
"""

import json
import os
import subprocess
import tempfile

import pytest

from conftest import MESHCTL, ROOT, TIMEOUT, wait_for
from test_runtime import ENGINE, containers_of, deploy, placements, prefix  # noqa: F401

pytestmark = pytest.mark.skipif(not ENGINE, reason="no container engine: run scripts/test.sh, "
                                "or scripts/engine.sh start DIR and set FOGMESH_ENGINE_SOCKET")

ENGINE_SH = os.path.join(ROOT, "scripts", "engine.sh")
GRACE = "2s"
LOOP = ["/bin/sh", "-c", "while true; do sleep 1; done"]


def app_spec(name, ms="svc", replicas=1, placement=None, engine_image="localhost/bbox:latest"):
    m = {"name": ms, "image": engine_image, "replicas": replicas, "command": LOOP,
         "resources": {"memory": "16Mi", "cpus": 0.1}}
    if placement:
        m["placement"] = placement
    return json.dumps({"kind": "Application", "name": name, "microservices": [m]})


def deploy_raw(node, text):
    return subprocess.run([MESHCTL, "--socket", node.socket, "deploy", "-f", "-"], input=text,
                          capture_output=True, text=True, timeout=30)


def running_on(nodes, prefix, app, ms="svc", replica=0, via=None):
    """The node that runs app/ms[replica] as both the API (via `via`, default nodes[0]) and the
    engine see it: placed there, state running, and a running container with that node's label.
    Returns the node name or None."""
    pl = placements(via or nodes[0]).get((app, ms, replica))
    if not pl or not pl.get("node") or pl.get("state") != "running":
        return None
    c = containers_of(prefix).get((pl["node"], app, ms, replica))
    return pl["node"] if c and c[1] == "running" else None


def by_name(nodes, name):
    return next(n for n in nodes if n.name == name)


def engines_available(node, count):
    ns = node.ctl_json("get", "nodes")
    return len(ns) == count and all(n["engine"] == "available" for n in ns)


def test_kill9_moves_replica_after_grace_pinned_one_waits(mesh, prefix):  # noqa: F811
    args = ["--engine", f"unix://{ENGINE}", "--reschedule-after", GRACE]
    # Labels keep the work off n0, which bootstraps the mesh and usually stays the leader, so
    # that the kill below mostly tests rescheduling rather than a Raft election as well.
    labels = {f"{prefix}{i}": {"role": "worker"} for i in (1, 2)}
    nodes = mesh.start_cluster(3, prefix=prefix, args=args, labels=labels)
    wait_for(lambda: engines_available(nodes[0], 3), timeout=TIMEOUT,
             what="every node to report its engine")
    app = f"{prefix}mv"
    wait_for(lambda: deploy(nodes[1], app_spec(app, placement={"labels": {"role": "worker"}})),
             timeout=TIMEOUT, what="a leader to take the deploy")
    host = wait_for(lambda: running_on(nodes, prefix, app), timeout=TIMEOUT,
                    what="the replica to run on a worker")
    pinned = f"{prefix}pin"
    deploy_ok = deploy(nodes[0], app_spec(pinned, placement={"node": host}))
    assert deploy_ok is not None
    wait_for(lambda: running_on(nodes, prefix, pinned) == host, timeout=TIMEOUT,
             what=f"the pinned replica to run on {host}")

    victim = by_name(nodes, host)
    survivors = [n for n in nodes if n is not victim]
    victim.kill9()
    # Its replica comes back on the other worker: placed there, running there in the engine.
    other = wait_for(lambda: running_on(survivors, prefix, app), timeout=TIMEOUT,
                     what="the replica to run on another node after the grace")
    assert other != host
    # Every survivor agrees.
    for n in survivors:
        wait_for(lambda: running_on(survivors, prefix, app, via=n) == other, timeout=TIMEOUT,
                 what=f"{n.name} to show the replica running on {other}")
    # The pinned one waits for its node: still on it, with the scheduler's reason, and no
    # container for it anywhere else.
    def pinned_waiting():
        p = placements(survivors[0]).get((pinned, "svc", 0))
        return p if p and p.get("message", "").startswith(f"waiting for node {host}") else None
    p = wait_for(pinned_waiting, timeout=TIMEOUT, what="the pinned replica to wait for its node")
    assert p["node"] == host and p["state"] != "running", p
    assert not [k for k in containers_of(prefix) if k[1] == pinned and k[0] != host]
    # The JSON of get microservices names the new node and its state.
    ms = {(m["app"], m["name"], m["replica"]): m for m in survivors[1].ctl_json(
        "get", "microservices")}
    assert ms[(app, "svc", 0)]["node"] == other and ms[(app, "svc", 0)]["state"] == "running"


BAD_SPECS = [
    # (spec, [fragments the error must name])
    ({"kind": "Application", "name": "APPNAME", "microservices": [
        {"name": "a"}]}, ["microservices[0].image"]),
    ({"kind": "Application", "name": "APPNAME", "microservices": [
        {"name": "a", "image": "x", "replicas": 0},
        {"name": "b", "image": "x", "resources": {"memory": "lots"}}]},
     ["microservices[0].replicas", "microservices[1].resources.memory"]),
    ({"kind": "Application", "name": "APPNAME", "microservices": [
        {"name": "a", "image": "x", "ports": [{"container": 70000}],
         "placement": {"arch": "sparc"}}]},
     ["microservices[0].ports[0].container", "microservices[0].placement.arch"]),
    ({"kind": "Application", "name": "APPNAME", "microservices": []}, ["microservices"]),
]


def test_bad_specs_refused_with_paths_nothing_stored(mesh, prefix):  # noqa: F811
    nodes = mesh.start_cluster(2, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    # A good deploy first, so that a refusal below is not "no leader yet".
    good = f"{prefix}good"
    wait_for(lambda: deploy(nodes[0], app_spec(good)), timeout=TIMEOUT, what="a leader")
    for i, (spec, paths) in enumerate(BAD_SPECS):
        name = f"{prefix}bad{i}"
        text = json.dumps(spec).replace("APPNAME", name)
        for n in nodes:  # on the leader and on a follower alike
            r = deploy_raw(n, text)
            assert r.returncode != 0, f"bad spec {i} accepted on {n.name}: {r.stdout}"
            for path in paths:
                assert path in r.stderr, f"spec {i}: {path!r} not in {r.stderr!r}"
            assert "Traceback" not in r.stderr and r.stderr.count("\n") <= 40
    # YAML that is not YAML, and a file that does not exist.
    r = deploy_raw(nodes[1], "kind: Application\nname: [oops\n")
    assert r.returncode != 0 and r.stderr.strip()
    r = subprocess.run([MESHCTL, "--socket", nodes[0].socket, "deploy", "-f",
                        os.path.join(mesh.workdir, "missing.yaml")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "missing.yaml" in r.stderr
    # Nothing of them stored: the apps list and the placements hold the good one only.
    for n in nodes:
        apps = n.ctl_json("get", "apps")
        names = {a["name"] for a in (apps.get("apps", apps) if isinstance(apps, dict) else apps)}
        assert not [a for a in names if a.startswith(f"{prefix}bad")], names
        assert not [k for k in placements(n) if k[0].startswith(f"{prefix}bad")]
    assert not [k for k in containers_of(prefix) if k[1].startswith(f"{prefix}bad")]


@pytest.fixture
def own_engine():
    """A second engine, of the same kind as the shared one, for one node; stopped at the end."""
    d = tempfile.mkdtemp(prefix=f"fogmesh-it-engine{os.getpid()}-")
    kind = os.environ.get("FOGMESH_ENGINE_KIND", "podman")
    env = dict(os.environ, FOGMESH_ENGINE_KIND=kind)
    r = subprocess.run([ENGINE_SH, "start", os.path.join(d, "e")], capture_output=True,
                       text=True, timeout=120, env=env)
    if r.returncode != 0:
        subprocess.run([ENGINE_SH, "stop", os.path.join(d, "e")], capture_output=True,
                       timeout=120, env=env)
        os.rmdir(d)
        pytest.fail(f"engine.sh start failed: {r.stderr}")

    class Own:
        sock = r.stdout.strip().splitlines()[-1]

        def stop(self):
            s = subprocess.run([ENGINE_SH, "stop", os.path.join(d, "e")], capture_output=True,
                               text=True, timeout=120, env=env)
            assert s.returncode == 0, s.stderr

    own = Own()
    try:
        yield own
    finally:
        own.stop()
        os.rmdir(d)


def test_engine_down_node_reported_replica_moves_nothing_placed(mesh, prefix, own_engine):  # noqa: F811
    shared = ["--engine", f"unix://{ENGINE}", "--reschedule-after", GRACE]
    nodes = mesh.start_cluster(2, prefix=prefix, args=shared)
    # The third node runs its own engine; it is the only one labelled, so work goes there.
    lonely = mesh.node(f"{prefix}2", key_file=mesh.key_file, join=(nodes[0].addr,),
                       labels={"own": "engine"},
                       args=["--engine", f"unix://{own_engine.sock}", "--reschedule-after", GRACE])
    lonely.start()
    nodes.append(lonely)
    mesh.wait_all_alive(nodes)
    wait_for(lambda: engines_available(nodes[0], 3), timeout=TIMEOUT,
             what="every node to report its engine")
    app = f"{prefix}eng"
    wait_for(lambda: deploy(nodes[0], app_spec(app, placement={"labels": {"own": "engine"}})),
             timeout=TIMEOUT, what="a leader to take the deploy")
    wait_for(lambda: placements(nodes[0]).get((app, "svc", 0), {}).get("state") == "running"
             and placements(nodes[0])[(app, "svc", 0)]["node"] == lonely.name, timeout=TIMEOUT,
             what="the replica to run on the node with its own engine")
    own_engine.stop()
    # Every node sees that engine down.
    for n in nodes:
        wait_for(lambda: {x["name"]: x["engine"] for x in n.ctl_json("get", "nodes")}
                 .get(lonely.name) == "unavailable", timeout=TIMEOUT,
                 what=f"{n.name} to report the engine of {lonely.name} unavailable")
    # Its replica leaves the node: no other node has the label, so it is pending, and the
    # reason names the engine.
    def pending_for_engine():
        p = placements(nodes[1]).get((app, "svc", 0))
        return p if p and not p.get("node") and "engine" in p.get("message", "") else None
    p = wait_for(pending_for_engine, timeout=TIMEOUT,
                 what="the replica to leave the node without an engine")
    assert p["state"] == "pending", p
    # New work never goes to it: three replicas spread over the two nodes that have an engine.
    free = f"{prefix}free"
    assert deploy(nodes[2], app_spec(free, replicas=3)) is not None
    def free_running():
        pl = placements(nodes[0])
        mine = [pl.get((free, "svc", r)) for r in range(3)]
        if not all(m and m.get("state") == "running" for m in mine):
            return None
        return mine
    mine = wait_for(free_running, timeout=TIMEOUT, what="the free replicas to run")
    assert {m["node"] for m in mine} == {nodes[0].name, nodes[1].name}, mine
    for r in range(3):
        assert (mine[r]["node"], free, "svc", r) in containers_of(prefix)
