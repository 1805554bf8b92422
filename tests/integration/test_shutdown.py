"""Stopping a node while its API clients wait on the leader (issue 10, item 10): node_raft_stop
freed writes and reads whose forwarded call or read index could still complete while raft
closed (a 5 s drain), a use-after-free that ASan reports. The leader is frozen (SIGSTOP) so that
a forwarded write and a consistent read on a follower wait for it; the follower is stopped and
the leader thawed at once, so the answers arrive during the follower's shutdown.
"""

import signal
import threading
import time

from conftest import MESHCTL, wait_for
from test_raft import api, by_name, leader_of, start_raft


def test_stop_with_forwarded_calls_in_flight(mesh):
    nodes, vs = start_raft(mesh, 3, "sd", voters=3)
    leader = by_name(nodes)[leader_of(vs)]
    f = next(n for n in nodes if n is not leader)
    answers = []

    def client(method, path, body=None):
        try:
            answers.append(api(f, method, path, body, timeout=20))
        except Exception as e:  # the node goes away under the client: that is the point
            answers.append(("gone", str(e)))

    leader.send_signal(signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=client, args=a) for a in (
            ("GET", "/v1/apps?consistent=true"),
            ("PUT", "/v1/apps/late", {"kind": "Application", "name": "late",
                                      "microservices": [{"name": "m", "image": "x"}]}),
            ("GET", "/v1/apps/late?consistent=true"))]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the calls are out, waiting for the frozen leader
        f.send_signal(signal.SIGTERM)
        # Thaw the leader once the follower has left the mesh, while raft closes.
        wait_for(lambda: "left the mesh" in f.read_log() or not f.running(), timeout=20,
                 interval=0.005, what="the follower to leave")
    finally:
        leader.send_signal(signal.SIGCONT)
    assert f.wait_exit(timeout=30) == 0, f.read_log()[-3000:]
    for t in threads:
        t.join(timeout=30)
    report = f.sanitizer_report()
    assert not report, report
    assert "ERROR: AddressSanitizer" not in f.read_log()
