"""Microservices run in a real container engine (issue 5).

Needs the private Podman that scripts/test.sh starts (scripts/engine.sh) and names in
FOGMESH_ENGINE_SOCKET; skipped without it. Several meshd share the one engine, told apart by
the fogmesh.node label, so node names carry this process's pid; every container the test's
nodes made is removed at teardown. The test that stops an engine starts a private one of its
own (scripts/engine.sh start in a temp dir) and stops it at teardown.
"""

import http.client
import json
import os
import socket
import struct
import subprocess
import tempfile
import urllib.parse

import pytest

from conftest import MESHCTL, ROOT, TIMEOUT, wait_for

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


def engine_raw(method, path, body=None, sock=None):
    c = UnixHTTP(sock or ENGINE)
    c.request(method, "/v1.41" + path, body=body)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def engine(method, path, body=None):
    status, data = engine_raw(method, path, body)
    return status, (json.loads(data) if data.strip() else None)


def container_logs(cid):
    """stdout and stderr of a container as text (Docker's 8-byte frames, or raw)."""
    _, data = engine_raw("GET", f"/containers/{cid}/logs?stdout=1&stderr=1")
    out, i = b"", 0
    while i + 8 <= len(data) and data[i] in (0, 1, 2) and data[i + 1:i + 4] == b"\0\0\0":
        (size,) = struct.unpack(">I", data[i + 4:i + 8])
        out += data[i + 8:i + 8 + size]
        i += 8 + size
    return (out + data[i:]).decode(errors="replace")


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


def spec(name, env="one", replicas=2, config=None, image="localhost/bbox:latest",
         command=("/bin/sh", "-c", "while true; do sleep 1; done")):
    ms = {"name": "worker", "image": image, "replicas": replicas, "command": list(command),
          "env": {"MODE": env}, "resources": {"memory": "32Mi", "cpus": 0.25}}
    if config is not None:
        ms["config"] = config
    return json.dumps({"kind": "Application", "name": name, "microservices": [ms]})


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


def replica(node, app, rep=0, ms="worker"):
    """This node's listing entry of one replica, or None."""
    return placements(node).get((app, ms, rep))


# The container prints its config at start and again on each SIGHUP (busybox sh runs the trap
# once the foreground sleep returns).
CONFIG_PRINTER = ("/bin/sh", "-c",
                  'trap \'echo HUP; cat "$FOGMESH_CONFIG"\' HUP; cat "$FOGMESH_CONFIG"; '
                  "while true; do sleep 1; done")


def test_config_reaches_the_container_and_a_config_change_does_not_recreate(mesh, prefix):
    nodes = mesh.start_cluster(1, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    app = f"{prefix}cfg"
    wait_for(lambda: deploy(nodes[0], spec(app, replicas=1, config={"greeting": "hello"},
                                           command=CONFIG_PRINTER)),
             timeout=TIMEOUT, what="the deploy")
    ids = wait_for(lambda: running_as_placed(nodes, prefix, app, 1), timeout=TIMEOUT,
                   what="the replica to run")
    cid = next(iter(ids.values()))
    # In place before the container started: its first output is the file.
    wait_for(lambda: '{"greeting":"hello"}' in container_logs(cid), timeout=TIMEOUT,
             what="the container to print its config")
    _, info = engine("GET", f"/containers/{cid}/json")
    assert "FOGMESH_CONFIG=/fogmesh/config.json" in info["Config"]["Env"]
    mount = [m for m in info["Mounts"] if m["Destination"] == "/fogmesh"]
    assert len(mount) == 1 and not mount[0]["RW"], info["Mounts"]
    # A config change alone: the file is rewritten and the container signalled, not recreated.
    wait_for(lambda: deploy(nodes[0], spec(app, replicas=1, config={"greeting": "bye"},
                                           command=CONFIG_PRINTER)),
             timeout=TIMEOUT, what="the config update")
    logs = wait_for(lambda: (lambda t: t if '{"greeting":"bye"}' in t else None)(
        container_logs(cid)), timeout=TIMEOUT, what="the new config to be seen inside")
    assert "HUP" in logs
    assert running_as_placed(nodes, prefix, app, 1) == ids, "a config change must not recreate"
    # A meshd restart adopts the container and leaves its config alone (no second signal).
    assert nodes[0].stop() == 0
    nodes[0].start()
    assert wait_for(lambda: running_as_placed(nodes, prefix, app, 1), timeout=TIMEOUT,
                    what="the replica after the restart") == ids
    wait_for(lambda: (replica(nodes[0], app) or {}).get("state") == "running", timeout=TIMEOUT,
             what="the replica to show running after the restart")
    assert container_logs(cid).count("HUP") == 1
    # The config lives in the node's data dir while the replica is placed here, not after.
    cfg_dir = os.path.join(nodes[0].data_dir, "containers", f"{app}.worker.0")
    with open(os.path.join(cfg_dir, "config.json")) as f:
        assert json.load(f) == {"greeting": "bye"}
    nodes[0].ctl("delete", "app", app)
    wait_for(lambda: not os.path.exists(cfg_dir), timeout=TIMEOUT,
             what="the config dir to go with the replica")
    assert not any(k[1] == app for k in containers_of(prefix))


def test_missing_image_fails_clearly_then_a_fixed_spec_runs(mesh, prefix):
    nodes = mesh.start_cluster(1, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    app = f"{prefix}img"
    missing = f"localhost/fogmesh-missing-{os.getpid()}:1"
    wait_for(lambda: deploy(nodes[0], spec(app, replicas=1, image=missing)), timeout=TIMEOUT,
             what="the deploy")
    entry = wait_for(lambda: (lambda r: r if r and r["state"] == "failed" else None)(
        replica(nodes[0], app)), timeout=TIMEOUT, what="the replica to fail")
    assert entry["message"].startswith(f"image not found: {missing}"), entry
    assert nodes[0].running()
    assert not any(k[1] == app for k in containers_of(prefix))
    # Fixing the spec: the image there is used, without a pull.
    wait_for(lambda: deploy(nodes[0], spec(app, replicas=1)), timeout=TIMEOUT,
             what="the fixed spec")
    wait_for(lambda: running_as_placed(nodes, prefix, app, 1), timeout=TIMEOUT,
             what="the fixed replica to run")
    wait_for(lambda: (replica(nodes[0], app) or {}).get("state") == "running", timeout=TIMEOUT,
             what="the listing to show it running")
    assert "pulling image localhost/bbox" not in nodes[0].read_log()


@pytest.fixture
def own_engine():
    """A private Podman of this test's own (it gets stopped and started again)."""
    d = tempfile.mkdtemp(prefix="fogmesh-rt-engine-")
    script = os.path.join(ROOT, "scripts", "engine.sh")

    def start():
        r = subprocess.run([script, "start", d], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def stop():
        subprocess.run([script, "stop", d], capture_output=True, text=True, timeout=120)

    sock = start()
    try:
        yield sock, start, stop
    finally:
        stop()


def test_engine_stopped_shows_unavailable_then_runs_again(mesh, prefix, own_engine):
    sock, start_engine, stop_engine = own_engine
    # A long grace: the replica stays placed here while the engine is away.
    nodes = mesh.start_cluster(1, prefix=prefix, args=["--engine", f"unix://{sock}",
                                                       "--reschedule-after", "10m"])
    node = nodes[0]
    app = f"{prefix}eng"
    wait_for(lambda: deploy(node, spec(app, replicas=1)), timeout=TIMEOUT, what="the deploy")
    wait_for(lambda: (replica(node, app) or {}).get("state") == "running", timeout=TIMEOUT,
             what="the replica to run")
    stop_engine()
    wait_for(lambda: node.ctl_json("get", "nodes")[0]["engine"] == "unavailable",
             timeout=TIMEOUT, what="the node to report its engine unavailable")
    entry = wait_for(lambda: (lambda r: r if r and r["state"] == "failed" else None)(
        replica(node, app)), timeout=TIMEOUT, what="the replica to show the engine's loss")
    assert "engine unavailable" in entry["message"], entry
    assert entry["node"] == node.name
    assert start_engine() == sock
    wait_for(lambda: node.ctl_json("get", "nodes")[0]["engine"] == "available",
             timeout=TIMEOUT, what="the engine to be seen again")
    wait_for(lambda: (replica(node, app) or {}).get("state") == "running", timeout=TIMEOUT,
             what="the replica to run again")


def test_status_shows_restarts_and_since(mesh, prefix):
    nodes = mesh.start_cluster(1, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    app = f"{prefix}rst"
    # Exits after a second; the engine's restart policy (always) brings it back.
    wait_for(lambda: deploy(nodes[0], spec(app, replicas=1,
                                           command=("/bin/sh", "-c", "sleep 1; exit 3"))),
             timeout=TIMEOUT, what="the deploy")
    entry = wait_for(lambda: (lambda r: r if r and r["state"] not in ("scheduled", "pending")
                              else None)(replica(nodes[0], app)),
                     timeout=TIMEOUT, what="the node's observation of the replica")
    # The listing carries restarts and since (meshd/node_runtime.c): a listing without them is
    # a regression, not a reason to skip.
    assert "restarts" in entry and "since" in entry, entry
    entry = wait_for(lambda: (lambda r: r if r.get("restarts", 0) >= 1 else None)(
        replica(nodes[0], app)), timeout=TIMEOUT, what="a restart to be counted")
    assert entry["since"], entry
