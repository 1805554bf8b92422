"""Start-up time and idle memory of one node: meshd beside a Serf agent started the same way
(fresh data dir, loopback address, no peers)."""

import os
import shutil
import time

from .common import free_port, median, row, rss_kib, tcp_accepts, unix_http_ok, wait_until

NAME = "startup"
ORDER = 10
TITLE = "node start-up time and idle RSS, meshd beside serf agent"
GOAL = ("Start-up: exec until the node answers its local API (meshd: GET /v1/status on the "
        "unix socket; serf: its RPC port accepts). Idle RSS: 1 s after it answers.")


def measure(ctx, start):
    times, rss = [], []
    for _ in range(ctx.runs):
        t0 = time.monotonic()
        p, check = start()
        t1 = wait_until(lambda: p.poll() is None and check(), timeout=20)
        times.append((t1 - t0) * 1000)
        time.sleep(1.0)  # a benchmark may let the process settle; tests never do this
        rss.append(rss_kib(p.pid) / 1024)
        ctx.stop(p)
    return median(times), median(rss)


def run(ctx, sc):
    def start_meshd():
        d = ctx.tempdir()
        sock = os.path.join(d, "api.sock")
        p = ctx.spawn([ctx.meshd, "--name", "bench", "--data-dir", d,
                       "--bind", f"127.0.0.1:{free_port()}", "--log-level", "warn"])
        return p, lambda: unix_http_ok(sock)

    mt, mr = measure(ctx, start_meshd)

    serf = shutil.which("serf")
    st = sr = None
    if serf:
        def start_serf():
            rpc = free_port()
            p = ctx.spawn([serf, "agent", "-node", "bench", "-bind",
                           f"127.0.0.1:{free_port()}", "-rpc-addr", f"127.0.0.1:{rpc}",
                           "-profile", "lan", "-log-level", "warn"], cwd=ctx.tempdir())
            return p, lambda: tcp_accepts("127.0.0.1", rpc)
        st, sr = measure(ctx, start_serf)
        row(sc, "start-up to API answering (median)", "serf", st, "ms")
    row(sc, "start-up to API answering (median)", "meshd", mt, "ms", st)
    if serf:
        row(sc, "idle RSS (median)", "serf", sr, "MiB")
    row(sc, "idle RSS (median)", "meshd", mr, "MiB", sr)
    sc["notes"].append(f"{ctx.runs} runs each; ratio = meshd / serf")
    if not serf:
        sc["notes"].append("serf not installed (Debian package serf): no baseline")
