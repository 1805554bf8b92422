"""Node failure to the microservice running elsewhere, with the default grace (10 s).

A private engine (scripts/engine.sh: Podman, or Docker with FOGMESH_ENGINE_KIND=docker) and,
for every run, a fresh mesh of 3 meshd on loopback sharing it, with default timing and the
default --reschedule-after (10 s). Nodes 1 and 2 carry a label that the application's one
replica asks for (placement.labels), so it runs on one of them and never on node 0, which
started the mesh and leads Raft: the kill measures rescheduling, not a Raft election. Once the
replica runs, its node is kill -9'd (its container stays in the engine, as on a machine that
lost its meshd); from then on a survivor's member list (GET /v1/members, every POLL s) and the
engine's container list (every POLL s) are polled until a container of the application runs on
the other worker. The time is split into detection (the leader reports the node dead), the
grace plus the scheduler's next tick (the leader's log line "scheduler: APP/svc[0] -> NODE from
HOST", wall clock in ms) and start (the container runs). The baseline is what the rules allow
at best: the grace plus the engine's own create + start of the same container, measured in the
same run.
"""

import json
import os
import time
import urllib.parse

from . import _workload as wl
from .common import median, row

NAME = "failover"
ORDER = 41
TITLE = "kill -9 of a node to its microservice running elsewhere (default 10 s grace)"
GOAL = ("Issue 5: when a node dies, its microservices come back up elsewhere by themselves "
        "after --reschedule-after (default 10 s); a pinned one waits for its node.")
POLL = 0.010
GRACE = 10.0
TIMEOUT = 60


def others_running(engine, app, host):
    return [labels.get("fogmesh.node") for labels, state in
            engine.containers(f"fogmesh.app={app}")
            if state == "running" and labels.get("fogmesh.node") != host]


def run(ctx, sc):
    engine = wl.Engine(ctx)
    mesh = None
    try:
        floor = [engine.create_start(f"fbench{os.getpid()}g{i}") for i in range(ctx.runs + 1)]
        floor = median(floor[1:])
        detect, placed, total, leader_hosts = [], [], [], 0
        for i in range(ctx.runs):
            labels = {1: {"role": "worker"}, 2: {"role": "worker"}}
            mesh = wl.Mesh(ctx, engine, 3, labels=labels)
            app = f"bf{os.getpid()}r{i}"
            mesh.deploy(0, wl.spec(app, placement={"labels": {"role": "worker"}}))
            host = None
            deadline = time.monotonic() + TIMEOUT
            while not host:
                host = engine.running_on(app)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{app} did not run within {TIMEOUT}s")
                time.sleep(POLL)
            hi = mesh.names.index(host)
            leader = mesh.leader(0)
            if leader == host:
                leader_hosts += 1
            watcher = next(j for j in range(3) if j != hi)
            w0, t0 = time.time(), time.monotonic()
            mesh.kill9(hi)
            t_dead = t_run = None
            deadline = t0 + TIMEOUT
            while t_run is None:
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"{app} did not run elsewhere within {TIMEOUT}s")
                if t_dead is None and mesh.status_of(watcher, host) == "dead":
                    t_dead = time.monotonic()
                if others_running(engine, app, host):
                    t_run = time.monotonic()
                time.sleep(POLL)
            w_placed = mesh.log_time(rf"scheduler: {app}/svc\[0\] -> \S+ from {host}", w0)
            if t_dead is not None:
                detect.append(t_dead - t0)
            if w_placed is not None:
                placed.append(w_placed - w0)
            total.append(t_run - t0)
            mesh.stop()
            mesh = None
            engine_cleanup(engine, app)
        row(sc, "engine create + start", engine.version, floor, "s")
        row(sc, "grace + engine create + start (the floor)", engine.version, GRACE + floor, "s")
        if detect:
            row(sc, "kill -9 to a survivor reporting it dead", "fogmesh", median(detect), "s")
        if placed:
            row(sc, "kill -9 to placed on another node", "fogmesh", median(placed), "s")
        row(sc, "kill -9 to running on another node", "fogmesh", median(total), "s",
            GRACE + floor)
        row(sc, "kill -9 to running elsewhere, slowest run", "fogmesh", max(total), "s",
            GRACE + floor)
        sc["notes"].append(f"{ctx.runs} runs, a fresh 3-node mesh each (medians); the killed "
                           f"node led Raft in {leader_hosts} of them; polls every "
                           f"{POLL * 1000:.0f} ms; ratio = fogmesh / (grace + engine create + "
                           f"start)")
    finally:
        if mesh:
            mesh.stop()
        engine.stop()


def engine_cleanup(engine, app):
    """Removes the application's containers (the dead node's one stays otherwise)."""
    filt = urllib.parse.quote(json.dumps({"label": [f"fogmesh.app={app}"]}))
    st, arr = engine.request("GET", f"/containers/json?all=true&filters={filt}")
    for c in arr or []:
        engine.request("DELETE", f"/containers/{c['Id']}?force=true")
