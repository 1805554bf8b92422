"""Deploy to running: `meshctl deploy` on one node until the container runs on another node,
beside the engine's own create + start of the same container (the floor), in the same run.

A private engine (scripts/engine.sh: Podman, or Docker with FOGMESH_ENGINE_KIND=docker) and 3
meshd on loopback that share it (default timing). Each run deploys a new one-replica
application from node 1 (a follower: the write is forwarded to the leader), pinned with
placement.node to node 2, and polls the engine's container list every POLL seconds until a
container labelled with that application runs; then deletes it and waits for the container to
go (not timed). The figure is exec of meshctl until the engine lists the container running.
It is split, from the nodes' logs (wall clock, ms), into: meshctl deploy returned (the write
committed), the leader's scheduler placed it ("scheduler: APP/svc[0] -> NODE"), and the
container ran. The floor: POST /containers/create + /start of the same image, command, host
network, limits and restart policy, from this process, until start answered.
"""

import os
import subprocess
import time

from . import _workload as wl
from .common import median, row, wait_until

NAME = "deploy"
ORDER = 40
TITLE = "deploy to running on another node, beside the engine's own create + start"
GOAL = ("Issue 5: `meshctl deploy -f app.yaml` on any node puts each microservice on a node, "
        "and that node runs it in its container engine within a second of the commit.")
POLL = 0.005
TIMEOUT = 30


def run(ctx, sc):
    engine = wl.Engine(ctx)
    mesh = None
    try:
        floor = [engine.create_start(f"fbench{os.getpid()}f{i}") for i in range(ctx.runs + 1)]
        floor = floor[1:]  # the first warms the engine's caches
        mesh = wl.Mesh(ctx, engine, 3)
        target = mesh.names[2]
        total, ack, placed = [], [], []
        for i in range(ctx.runs + 1):
            app = f"bd{os.getpid()}r{i}"
            text = wl.spec(app, placement={"node": target})
            w0, t0 = time.time(), time.monotonic()
            p = subprocess.Popen([ctx.meshctl, "--socket", mesh.sock(1), "deploy", "-f", "-"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            p.stdin.write(text)
            p.stdin.close()
            t_ack = None
            deadline = t0 + TIMEOUT
            while True:
                if t_ack is None and p.poll() is not None:
                    t_ack = time.monotonic()
                    if p.returncode != 0:
                        raise RuntimeError(f"meshctl deploy: {p.stderr.read().strip()}")
                if engine.running_on(app) == target:
                    t_run = time.monotonic()
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{app} did not run on {target} in {TIMEOUT}s")
                time.sleep(POLL)
            if t_ack is None:
                p.wait()
                t_ack = time.monotonic()
            p.stderr.close()
            w_placed = mesh.log_time(rf"scheduler: {app}/svc\[0\] -> {target}", w0)
            if i:  # the first run warms up (the image's first use on that node)
                total.append(t_run - t0)
                ack.append(t_ack - t0)
                if w_placed is not None:
                    placed.append(w_placed - w0)
            r = mesh.ctl(0, "delete", "app", app)
            if r.returncode != 0:
                raise RuntimeError(f"meshctl delete: {r.stderr.strip()}")
            wait_until(lambda: not engine.containers(f"fogmesh.app={app}"), timeout=TIMEOUT,
                       interval=0.05)
        f = median(floor) * 1000
        row(sc, "engine create + start (the floor)", engine.version, f, "ms")
        row(sc, "meshctl deploy returned (committed)", "fogmesh", median(ack) * 1000, "ms")
        if placed:
            row(sc, "placed by the leader's scheduler", "fogmesh", median(placed) * 1000, "ms")
        row(sc, "deploy to running on another node", "fogmesh", median(total) * 1000, "ms", f)
        row(sc, "deploy to running, slowest run", "fogmesh", max(total) * 1000, "ms", f)
        sc["notes"].append(f"{ctx.runs} runs after one warm-up each (medians); deploy from a "
                           f"follower, pinned to a third node; engine polled every "
                           f"{POLL * 1000:.0f} ms; ratio = fogmesh / engine create + start")
    finally:
        if mesh:
            mesh.stop()
        engine.stop()
