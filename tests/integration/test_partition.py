"""A network partition splits the mesh and the mesh heals when it is removed (issue 3).

Each node runs in a network namespace of its own, all joined by a bridge in one more
namespace; every name carries this process's pid so that parallel runs do not clash, and
everything is deleted at teardown, whatever happened. The partition is iptables DROP rules
inside the node namespaces (never in the machine's own namespace).
"""

import time

from conftest import TIMEOUT, summarize, wait_for, wait_views
from netlab import SUBNET


def test_partition_splits_and_heals(mesh, lab):
    key = mesh.keygen()
    nodes = []
    for i, ns in enumerate(lab.node_ns):
        join = [] if i == 0 else [nodes[0].addr]
        nodes.append(mesh.node(f"p{i}", host=lab.ip_of(i), netns=ns, key_file=key,
                               join=join).start())
    mesh.wait_all_alive(nodes, what="the nodes in namespaces to join")
    for n in nodes:
        assert n.status()["node"]["addr"].startswith(SUBNET + ".")

    a_idx, b_idx = [0, 1, 2], [3, 4]
    side_a = [nodes[i] for i in a_idx]
    side_b = [nodes[i] for i in b_idx]
    names_a = {n.name for n in side_a}
    names_b = {n.name for n in side_b}
    lab.cut(a_idx, b_idx)

    def split(vs):
        for o, v in vs.items():
            mine, theirs = (names_a, names_b) if o in names_a else (names_b, names_a)
            if not all(v[x]["status"] == "dead" for x in theirs):
                return False
            if not all(v[x]["status"] == "alive" for x in mine):
                return False
        return True

    def own_side_dead(vs):
        for o, v in vs.items():
            mine = names_a if o in names_a else names_b
            for x in mine:
                if v[x]["status"] in ("dead", "left"):
                    return f"{o} reports {x}, on its own side of the partition, {v[x]['status']}"
        return None

    # Detection takes longer than for one kill -9: the small side has no third member to
    # confirm a suspicion (Lifeguard then keeps the longest suspicion timeout) and its failed
    # probes raise the local health score, which slows its probing. Hence twice the timeout.
    t0 = time.monotonic()
    wait_views(nodes, split, forbid=own_side_dead, timeout=TIMEOUT * 2,
               what="each side to report the other side dead")
    t1 = time.monotonic()
    lab.heal()
    vs = mesh.wait_all_alive(nodes, timeout=TIMEOUT * 2,
                             what="all nodes alive everywhere after the partition healed")
    print(f"split seen in {t1 - t0:.1f}s, healed in {time.monotonic() - t1:.1f}s:\n"
          + summarize(vs))
    # The status counters agree with the member lists. After a heal a loaded node (ASan, two
    # cores) may briefly suspect a member again and refute it; SWIM allows that, so the check
    # waits for the counters to settle instead of sampling them once.
    want = {"alive": 5, "suspect": 0, "dead": 0, "left": 0}
    for n in nodes:
        wait_for(lambda: n.status()["members"] == want, timeout=TIMEOUT,
                 what=f"{n.name}'s status counters to show all five alive")
