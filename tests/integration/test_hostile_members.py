"""A member that holds the mesh key but lies on the gossip port (issue 10, items 3 and 7): it
makes up members by the hundred, and it forges packets in another member's name with an
absurd epoch. A Python peer (gossip_peer.py) seals the packets with the mesh key.

What must hold: made-up members never become Raft servers nor entries of DATA_DIR/peers, while
a real node that joins meanwhile still gets its seat; a forged epoch for Y never makes X drop
Y's real gossip (Y stays alive at X), and a real restart of Y (a new epoch) is still accepted.
"""

import os
import socket

from conftest import TIMEOUT, Fatal, forbid_statuses, wait_for, wait_views
from gossip_peer import GossipPeer, alive_msg, gossip_packet

FAKES = 512
PER_PACKET = 4  # 512 fakes in 128 packets, to every node


def raft_servers(node, known=None):
    """{name: role} of `meshctl raft peers -o json` on node. A server this node does not know
    by name yet shows as its raft id (the first 8 bytes of its node id, in hex): known
    ({raft id: name}) maps those back."""
    peers = node.ctl_json("raft", "peers")
    known = known or {}
    return {known.get(s["name"], s["name"]): s["role"] for s in peers["servers"]}


def raft_ids(nodes):
    return {n.node_id()[:16]: n.name for n in nodes}


def unused_udp_port():
    """A port nobody answers on, for the made-up members' addresses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def flood_fake_members(peer, targets, count=FAKES, prefix="fake"):
    dead_port = unused_udp_port()
    for p in range(count // PER_PACKET):
        msgs = [alive_msg(f"{prefix}-{p * PER_PACKET + k}", os.urandom(16), "127.0.0.1",
                          dead_port) for k in range(PER_PACKET)]
        pkt = gossip_packet("attacker", os.urandom(16), msgs)
        for t in targets:
            peer.send(t.addr, pkt)


def test_fake_members_get_no_raft_seat_and_no_peers_entry(mesh):
    nodes = mesh.start_cluster(3, prefix="h")
    wait_for(lambda: len(raft_servers(nodes[0])) == 3, timeout=TIMEOUT,
             what="the three nodes to be Raft servers")
    real = {n.name for n in nodes}

    with GossipPeer(mesh.key_file) as peer:
        flood_fake_members(peer, nodes)
    # The flood arrived (up to the bound on unverified members).
    wait_for(lambda: len(nodes[0].members()) >= 3 + 100, timeout=TIMEOUT,
             what="the made-up members to be listed")

    # A real node joining after the flood must still become a server: the event to wait for.
    # Meanwhile (4 fakes a second were added before the fix) no made-up member gets a seat.
    late = mesh.node("h3", key_file=mesh.key_file, join=(nodes[0].addr,)).start()
    every = nodes + [late]

    known = raft_ids(every)

    def seated():
        servers = raft_servers(nodes[0], known)
        fakes = sorted(set(servers) - real - {late.name})
        if fakes:
            raise Fatal(f"made-up members became Raft servers: {fakes[:10]}")
        return late.name in servers

    wait_for(seated, timeout=2 * TIMEOUT, interval=0.25, what="the real late node to be seated")
    for n in every:
        fakes = sorted(set(raft_servers(n, known)) - real - {late.name})
        assert not fakes, f"{n.name} lists made-up Raft servers: {fakes[:10]}"
    # The made-up members are listed, unverified, and within the bound on unverified ones.
    st = nodes[0].status()
    assert st["gossip"]["unverified_members"] <= 1024, st["gossip"]
    listed = nodes[0].members()
    assert not any(m["verified"] for m in listed if m["name"].startswith("fake-"))
    assert all(m["verified"] for m in listed if m["name"] in real | {late.name})

    # DATA_DIR/peers is written at a graceful stop (and every 10 s): only real nodes in it.
    addrs = {n.addr for n in every}
    for n in (nodes[1], late):
        n.stop()
        path = os.path.join(n.data_dir, "peers")
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
        assert lines, f"{path} is empty"
        assert set(lines) <= addrs, f"{path} holds made-up addresses: {sorted(set(lines) - addrs)[:10]}"


def gossip(node):
    return node.status()["gossip"]


def test_forged_epoch_does_not_shut_out_a_member(mesh):
    nodes = mesh.start_cluster(3, prefix="e")
    x, y, z = nodes
    y_id = bytes.fromhex(y.node_id())
    forged = gossip_packet(y.name, y_id, [])
    observers = [x]
    forbid = forbid_statuses([y.name], bad=("suspect", "dead", "left"), observers=[x.name])

    with GossipPeer(mesh.key_file) as peer:
        # Before the fix one packet was enough: X then dropped every packet of Y's as a replay
        # from an earlier run, and Y flapped dead/alive. The attacker keeps at it.
        def attack():
            peer.send(x.addr, forged, sender_id=y_id, epoch=2**64 - 1)

        attack()
        g0 = gossip(x)

        def heard_plenty(_vs):
            attack()
            return gossip(x)["packets_in"] >= g0["packets_in"] + 300

        wait_views(observers, heard_plenty, forbid=forbid, interval=0.1,
                   what="X to hear 300 more packets")
        g1 = gossip(x)
        # Y's real packets pass: the few forged ones may count as replays, Y's never.
        assert g1["dropped_replayed"] - g0["dropped_replayed"] < 10, (g0, g1)

        # Y restarts (a new epoch): X accepts its gossip at once again, the forgery goes on.
        y.kill9()
        y.start()
        wait_views(observers, lambda vs: vs[x.name].get(y.name, {}).get("status") == "alive",
                   what="X to see the restarted Y alive")
        g2 = gossip(x)

        def heard_more(_vs):
            attack()
            return gossip(x)["packets_in"] >= g2["packets_in"] + 300

        wait_views(observers, heard_more, forbid=forbid, interval=0.1,
                   what="X to hear 300 more packets after Y's restart")
        g3 = gossip(x)
        assert g3["dropped_replayed"] - g2["dropped_replayed"] < 10, (g2, g3)
    assert z.running()
