"""A member that holds the mesh key but forwards writes meshd would never send (issue 10, items
1 and 2): the leader decodes, validates and re-encodes every forwarded write, so nothing it
stores can crash a reader or damage raft_uv's storage.

The hostile member is call_peer.Peer: a link under the mesh key, then CALL_RAFT_APPLY requests
with hand-built commands.
"""

import base64
import json

from call_peer import CALL_RAFT_APPLY, CallError, Peer, cmd_put_app, cmd_put_rec, mp_str, mp_uint, mp_array
from test_raft import api, by_name, leader_of, start_raft, wait_raft


def hostile_to_leader(mesh, nodes, vs):
    leader = by_name(nodes)[leader_of(vs)]
    key = base64.b64decode(mesh.read_key(mesh.key_file))
    return leader, Peer(leader.host, leader.port, key)


def all_running(nodes):
    for n in nodes:
        assert n.running(), f"meshd {n.name} exited ({n.proc.returncode}):\n{n.read_log()[-3000:]}"


def apps_of(node):
    st, body = api(node, "GET", "/v1/apps")
    assert st == 200, body
    return {a["name"]: a for a in body["apps"]}


def test_forwarded_writes_are_validated_by_the_leader(mesh):
    """A spec with a nameless microservice crashed every node on 4821b1f (and again at every
    restart, as the entry replayed); now the leader refuses it, and what it accepts it stores
    in canonical form."""
    nodes, vs = start_raft(mesh, 3, "hv", voters=3)
    leader, peer = hostile_to_leader(mesh, nodes, vs)
    bad_specs = {
        "nameless": {"kind": "Application", "name": "nameless",
                     "microservices": [{"image": "localhost/bbox:latest"}]},
        "notjson": b"{not json",
        "othername": {"kind": "Application", "name": "someone-else",
                      "microservices": [{"name": "a", "image": "x"}]},
        "ms-not-object": {"kind": "Application", "name": "ms-not-object",
                          "microservices": [17]},
    }
    for name, spec in bad_specs.items():
        raw = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
        status, reply = peer.call(CALL_RAFT_APPLY, cmd_put_app(name, raw))
        assert status != 0, f"the leader took {name}: {reply!r}"
    # A record that is not a service declaration, and one whose key and value disagree.
    for key, value in (("expose/db/hv0", b'{"service": 5}'),
                       ("expose/db/hv0", b'{"service":"other","node":"hv0","target":"127.0.0.1:1"}'),
                       ("connect/hv0/127.0.0.1:9", b"\xff\xfe")):
        status, reply = peer.call(CALL_RAFT_APPLY, cmd_put_rec(key, value))
        assert status != 0, f"the leader took record {key}={value!r}: {reply!r}"
    # Not a command at all, and a command of an unknown type.
    for raw in (b"\x01\x02\x03", mp_array(mp_uint(1), mp_uint(99), mp_str("x"))):
        status, _ = peer.call(CALL_RAFT_APPLY, raw)
        assert status != 0

    # A valid spec in a spelling meshd would not store (key order, spaces, defaults left out)
    # is stored canonical: the same spec deployed through the API afterwards is "unchanged".
    spec = {"microservices": [{"image": "localhost/bbox:latest", "name": "reader"}],
            "name": "loose", "kind": "Application"}
    status, reply = peer.call(CALL_RAFT_APPLY, cmd_put_app("loose", json.dumps(spec, indent=3).encode()))
    assert status == 0, reply
    wait_raft(nodes, lambda v: all(x["applied_index"] >= vs[leader.name]["commit_index"] + 1
                                   for x in v.values()), what="the write applied everywhere")
    for n in nodes:
        wait_raft([n], lambda v, n=n: "loose" in apps_of(n), what=f"loose on {n.name}")
    st, body = api(nodes[1], "PUT", "/v1/apps/loose", spec)
    assert st == 200 and body["result"] == "unchanged", body
    all_running(nodes)
    for n in nodes:
        assert set(apps_of(n)) == {"loose"}, apps_of(n)
    peer.close()

    # Restarts replay the log: still nothing crashes.
    for n in nodes:
        n.stop()
    for n in nodes:
        n.start()
    wait_raft(nodes, lambda v: len({x["leader"] for x in v.values()} - {None}) == 1 and
              all("loose" in apps_of(n) for n in nodes), what="the restarted nodes to agree")
    all_running(nodes)


def test_unpadded_command_is_padded_and_survives_kill9(mesh):
    """A command whose length is not a multiple of 8 made raft_uv write entries its own loader
    refuses: a follower would not start ("short read") and the leader set the segment aside and
    came back with no apps. Now the leader re-encodes (pads) it, and every replica keeps it
    across kill -9 and restart."""
    nodes, vs = start_raft(mesh, 3, "hp", voters=3)
    leader, peer = hostile_to_leader(mesh, nodes, vs)
    names = []
    for i in range(5):
        name = f"odd{i}"
        spec = json.dumps({"kind": "Application", "name": name,
                           "microservices": [{"name": "m", "image": "x" * (i + 1)}]})
        cmd = cmd_put_app(name, spec.encode())
        if len(cmd) % 8 == 0:
            cmd = cmd_put_app(name, (spec + " ").encode())
        assert len(cmd) % 8 != 0
        status, reply = peer.call(CALL_RAFT_APPLY, cmd)
        assert status == 0, reply
        names.append(name)
    peer.close()
    for n in nodes:
        wait_raft([n], lambda v, n=n: set(names) <= set(apps_of(n)), what=f"the apps on {n.name}")
    for n in nodes:
        n.kill9()
    for n in nodes:
        n.start()
    wait_raft(nodes, lambda v: len({x["leader"] for x in v.values()} - {None}) == 1,
              what="a leader after the restart")
    all_running(nodes)
    for n in nodes:
        wait_raft([n], lambda v, n=n: set(names) <= set(apps_of(n)),
                  what=f"the apps on {n.name} after kill -9 and restart")
        assert "damaged" not in n.read_log() and "cannot be loaded" not in n.read_log()


def test_a_member_cannot_take_the_leaders_address(mesh):
    """Calls to an address reuse whatever link advertises it: on 4821b1f a key holder that
    advertised the leader's address in its handshake got the writes a follower forwarded to
    the leader. Now a link claiming a live verified member's address is refused."""
    nodes, vs = start_raft(mesh, 3, "ha", voters=3)
    leader = by_name(nodes)[leader_of(vs)]
    f = next(n for n in nodes if n is not leader)
    key = base64.b64decode(mesh.read_key(mesh.key_file))
    peer = None
    try:
        peer = Peer(f.host, f.port, key, name="impostor", adv=(leader.host, leader.port))
    except (CallError, ConnectionError, OSError):
        pass  # refused: what should happen
    try:
        spec = {"kind": "Application", "name": "through",
                "microservices": [{"name": "m", "image": "x"}]}
        st, body = api(f, "PUT", "/v1/apps/through", spec, timeout=20)
        assert st == 201, (st, body)
        wait_raft([leader], lambda v: "through" in apps_of(leader), what="the write at the leader")
    finally:
        if peer:
            peer.close()
    assert peer is None, "a link claiming the leader's address was accepted"
