"""`meshctl logs`, `describe microservice` and `move` over the mesh (issue 5).

Real meshd processes and the private Podman of scripts/test.sh (FOGMESH_ENGINE_SOCKET); the
helpers and the cleanup fixture come from test_runtime.
"""

import json
import subprocess
import time

from conftest import MESHCTL, TIMEOUT, wait_for
from test_runtime import ENGINE, containers_of, deploy, pytestmark, prefix  # noqa: F401


def app_spec(name, replicas=2, node=None):
    ms = {"name": "talker", "image": "localhost/bbox:latest", "replicas": replicas,
          # Numbered lines, one every 0.2 s, after a first burst of 50.
          "command": ["/bin/sh", "-c",
                      "i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); done; "
                      "while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]}
    if node:
        ms["placement"] = {"node": node}
    return json.dumps({"kind": "Application", "name": name, "microservices": [ms]})


def where(node, app):
    """{replica: node name} of app's placements, as node sees them."""
    return {m["replica"]: m.get("node") for m in node.ctl_json("get", "microservices")
            if m["app"] == app}


def logs(node, *args, timeout=30):
    return subprocess.run([MESHCTL, "--socket", node.socket, "logs", *args],
                          capture_output=True, text=True, timeout=timeout)


def running_everywhere(nodes, app, count):
    ms = [m for m in nodes[0].ctl_json("get", "microservices") if m["app"] == app]
    return len(ms) == count and all(m["state"] == "running" for m in ms) and ms


def test_logs_describe_and_move_from_any_node(mesh, prefix):  # noqa: F811
    nodes = mesh.start_cluster(3, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    wait_for(lambda: all(n["engine"] == "available" for n in nodes[0].ctl_json("get", "nodes")),
             timeout=TIMEOUT, what="every node to report its engine")
    app = f"{prefix}logs"
    wait_for(lambda: deploy(nodes[0], app_spec(app)), timeout=TIMEOUT, what="the deploy")
    wait_for(lambda: running_everywhere(nodes, app, 2), timeout=TIMEOUT,
             what="both replicas running")
    placed = where(nodes[0], app)
    # Ask from a node that runs replica 0 and from one that does not: the output is the same.
    local = next(n for n in nodes if n.name == placed[0])
    remote = next(n for n in nodes if n.name not in placed.values())

    def has_burst(n):
        r = logs(n, f"{app}/talker")
        return r.returncode == 0 and "line 0\n" in r.stdout and "line 49\n" in r.stdout and r
    for n in (local, remote):
        wait_for(lambda: has_burst(n), timeout=TIMEOUT, what=f"the log through {n.name}")
    # --tail N: the last N lines only.
    r = logs(remote, f"{app}/talker/1", "--tail", "3")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3, r.stdout
    # --follow: new lines keep coming through the mesh until the client stops.
    p = subprocess.Popen([MESHCTL, "--socket", remote.socket, "logs", f"{app}/talker", "-f",
                          "--tail", "1"], stdout=subprocess.PIPE, text=True)
    try:
        first = p.stdout.readline()
        assert first.startswith("line "), first
        n0 = int(first.split()[1])
        deadline = time.monotonic() + TIMEOUT
        while True:
            line = p.stdout.readline()
            assert line, "the followed log ended"
            if int(line.split()[1]) >= n0 + 5:
                break
            assert time.monotonic() < deadline, "no new lines followed"
    finally:
        p.kill()
        p.wait()
    # A followed log that is quiet, interrupted before any output: both nodes let go of it.
    quiet = f"{prefix}quiet"
    wait_for(lambda: deploy(local, json.dumps({"kind": "Application", "name": quiet,
                                               "microservices": [{
                                                   "name": "mute", "image":
                                                   "localhost/bbox:latest", "command":
                                                   ["/bin/sh", "-c", "sleep 100000"]}]})),
             timeout=TIMEOUT, what="the quiet app's deploy")
    wait_for(lambda: running_everywhere(nodes, quiet, 1), timeout=TIMEOUT,
             what="the quiet replica running")
    host = next(n for n in nodes if n.name == where(nodes[0], quiet)[0])
    asker = next(n for n in nodes if n is not host)
    p = subprocess.Popen([MESHCTL, "--socket", asker.socket, "logs", f"{quiet}/mute", "-f"],
                         stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: asker.status()["log_streams"] == 1 and host.status()["log_streams"] == 1,
                 timeout=TIMEOUT, what="the followed log to be open on both nodes")
    finally:
        p.kill()
        p.wait()
    wait_for(lambda: asker.status()["log_streams"] == 0 and host.status()["log_streams"] == 0,
             timeout=TIMEOUT, what="both nodes to close the log stream the client left")
    nodes[0].ctl("delete", "app", quiet)
    # Errors: unknown microservice, bad replica, bad tail.
    r = logs(remote, f"{app}/nope")
    assert r.returncode == 1 and "no replica 0" in r.stderr, r.stderr
    r = logs(remote, f"{app}/talker/7")
    assert r.returncode == 1 and "no replica 7" in r.stderr, r.stderr
    r = logs(remote, f"{app}/talker", "--tail", "x")
    assert r.returncode == 2, r.stderr

    # describe microservice: spec and replicas with node and state.
    d = remote.ctl_json("describe", "microservice", f"{app}/talker")
    assert d["spec"]["image"] == "localhost/bbox:latest"
    assert {r["replica"]: r["node"] for r in d["replicas"]} == placed
    assert all(r["state"] == "running" for r in d["replicas"])
    r = remote.ctl("describe", "microservice", f"{app}/nope", check=False)
    assert r.returncode == 1 and "no microservice 'nope'" in r.stderr, r.stderr

    # move: replica 0 to the node that runs none, asked on a follower or the leader alike.
    target = remote.name
    out = local.ctl("move", f"{app}/talker/0", target)
    assert f"moved to {target}" in out.stdout, out
    wait_for(lambda: where(nodes[0], app).get(0) == target and
             (lambda c: c.get((target, app, "talker", 0), (None, ""))[1] == "running")(
                 containers_of(prefix)),
             timeout=TIMEOUT, what="replica 0 to run on the node it was moved to")
    wait_for(lambda: (local.name, app, "talker", 0) not in containers_of(prefix),
             timeout=TIMEOUT, what="the old container to be removed")
    # Refusals say why: already there, an unknown node.
    r = local.ctl("move", f"{app}/talker/0", target, check=False)
    assert r.returncode == 1 and "already" in r.stderr, r.stderr
    r = local.ctl("move", f"{app}/talker/0", "no-such-node", check=False)
    assert r.returncode == 1 and "no-such-node" in r.stderr, r.stderr
    nodes[0].ctl("delete", "app", app)
    wait_for(lambda: not any(k[1] == app for k in containers_of(prefix)), timeout=TIMEOUT,
             what="the containers to be removed")
