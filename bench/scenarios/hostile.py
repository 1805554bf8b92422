"""What a hostile or buggy member or local client can cost a node (issue 10's bounds): CPU and
log while the API is flooded past the node's fd limit, and memory held by half-sent push-pull
requests, each beside the same node idle in the same run."""

import base64
import os
import resource
import sys

from .common import median, row

# The attacker is the malicious peer of the integration tests (a Python node speaking the link
# protocol with real Noise): one implementation, so the bench measures what the tests check.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tests", "integration"))

NAME = "hostile"
ORDER = 90
TITLE = "cost of a flooding client and of half-sent peer requests"
GOAL = ("API flood: 200 clients connect to a node run with RLIMIT_NOFILE 128; CPU share and log "
        "bytes over 5 s, beside the same node idle. Push-pull: a key holder sends the first "
        "4 MiB - 4 KiB of 40 push-pull requests and never finishes them; meshd's RSS after, beside "
        "its RSS before.")


def run(ctx, sc):
    import call_peer
    import conftest
    import test_exhaustion as te

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    os.environ["FOGMESH_BUILD"] = ctx.build
    idle_cpu, flood_cpu, flood_log, rss0, rss1, resets = [], [], [], [], [], []
    try:
        for i in range(ctx.runs):
            m = conftest.Mesh()
            try:
                node = te.limited_node(m, f"a{i}", nofile=128)
                idle_cpu.append(100 * te.cpu_share(node.proc.pid, 5.0))
                log0 = te.log_size(node)
                socks = te.api_connect_many(node.socket, 200)
                flood_cpu.append(100 * te.cpu_share(node.proc.pid, 5.0))
                flood_log.append(te.log_size(node) - log0)
                te.close_all(socks)
                node.stop()

                n2 = m.start_cluster(1, prefix=f"pp{i}")[0]
                key = base64.b64decode(m.read_key(m.key_file))
                rss0.append(te.rss_kib(n2.proc.pid))
                reset = 0
                with call_peer.Peer(n2.host, n2.port, key, name="m", timeout=30) as p:
                    for _ in range(40):
                        try:
                            p.call(call_peer.CALL_PUSHPULL, b"\0" * ((4 << 20) - 4096),
                                   finish=False, timeout=30)
                        except call_peer.CallError:
                            reset += 1
                    rss1.append(te.rss_kib(n2.proc.pid))
                resets.append(reset)
            finally:
                m.close(False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    row(sc, "CPU share, idle (median)", "meshd", median(idle_cpu), "% of a core")
    row(sc, "CPU share, 200 API clients over RLIMIT 128", "meshd", median(flood_cpu),
        "% of a core")
    row(sc, "log written during the flood (median)", "meshd", median(flood_log), "bytes")
    row(sc, "RSS before half-sent push-pulls (median)", "meshd", median(rss0) / 1024, "MiB")
    row(sc, "RSS after 40 half-sent push-pulls (median)", "meshd", median(rss1) / 1024, "MiB",
        median(rss0) / 1024)
    sc["notes"].append(f"{ctx.runs} runs; CPU share spread idle {min(idle_cpu):.2f}-"
                       f"{max(idle_cpu):.2f} %, flood {min(flood_cpu):.2f}-{max(flood_cpu):.2f} %")
    sc["notes"].append(f"requests reset by the 16 MiB receiving bound: {resets}")
    sc["notes"].append("no baseline tool: the figures are bounds, compared with the node idle")
