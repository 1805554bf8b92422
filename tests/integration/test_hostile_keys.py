"""A hostile member against the key ring (issue 10, item 6): a Python peer that holds the mesh
key and a valid identity asks nodes for their keys and tries to change their rings without the
proofs meshd/node_api.c asks for. It must see fingerprints only, and every attempt must be
refused, the ring unchanged on disk and in `meshctl keys list`; and after the operator's
rotation (install --exclude, use, remove) it can do nothing at all.
"""

import base64
import json
import os
import random

import call_peer
import noise_peer

from conftest import TIMEOUT, wait_for


def ring_file(node):
    with open(os.path.join(node.data_dir, "keyring")) as f:
        return f.read()


def ring_keys(node):
    """The base64 keys in a node's ring file, primary first."""
    return [line for line in ring_file(node).splitlines() if line and not line.startswith("#")]


def fp_hex(key):
    return call_peer.key_fp(key).hex()


def ctl_json_rc(node, *args):
    r = node.ctl("-o", "json", *args, check=False)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None, r.stderr


def peer(node, key, name="mallory"):
    return call_peer.CallPeer(node.host, node.port, key, name=name)


def test_member_sees_only_fingerprints(mesh):
    nodes = mesh.start_cluster(2)
    old_b64 = mesh.read_key(mesh.key_file)
    old = base64.b64decode(old_b64)
    with peer(nodes[1], old) as p:
        # The ring as a member gets it: fingerprints, the primary marked, no key bytes.
        status, body = p.keyop(call_peer.mp_uint(2), call_peer.mp_uint(call_peer.KEYOP_LIST))
        assert status == 0, body
        assert old not in body
        assert call_peer.mp_decode(body) == [[call_peer.key_fp(old), True]]
        # The version-1 list returned every key in clear: refused now, and nothing leaks.
        status, body = p.keyop(call_peer.mp_uint(1), call_peer.mp_uint(call_peer.KEYOP_LIST))
        assert status != 0 and b"upgrade" in body, (status, body)
        assert old not in body

        # Mangled requests (every truncation of a valid one, random bytes, flipped bytes) are
        # refused as such; the link and the node survive them (ASan build: no report).
        rnd = random.Random(10)
        good = call_peer.mp_array(call_peer.mp_uint(2), call_peer.mp_uint(call_peer.KEYOP_USE),
                                  call_peer.mp_bin(call_peer.key_fp(old)),
                                  call_peer.mp_bin(b"\0" * 32), call_peer.mp_bin(b"\0" * 32))
        bad = [good[:i] for i in range(1, len(good))]
        bad += [rnd.randbytes(rnd.randrange(1, 200)) for _ in range(50)]
        for _ in range(50):
            b = bytearray(good)
            b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
            bad.append(bytes(b))
        before = ring_file(nodes[1])
        for req in bad:
            status, body = p.call(call_peer.CALL_KEYOP, req)
            assert status != 0, (req, body)
        assert p.keys_list() == [(call_peer.key_fp(old), True)]
        assert ring_file(nodes[1]) == before and nodes[1].running()

    # The operator's view: fingerprints in the API and in meshctl, and which are this node's.
    k = nodes[0].ctl_json("keys", "list")
    assert k["keys"] == {fp_hex(old): {"nodes": 2, "primary": 2, "here": True}}, k
    assert k["primary_here"] == fp_hex(old)
    table = nodes[0].ctl("keys", "list").stdout
    assert fp_hex(old) in table and old_b64 not in table, table
    assert nodes[0].ctl("keys", "fingerprint", old_b64).stdout.strip() == fp_hex(old)


def test_member_without_proofs_cannot_change_rings(mesh):
    nodes = mesh.start_cluster(3)
    op, victim, evil = nodes
    old_b64 = mesh.read_key(mesh.key_file)
    old = base64.b64decode(old_b64)
    mine = noise_peer.random_key()  # a key the attacker chose
    before = {n.name: ring_file(n) for n in nodes}
    list_before = op.ctl_json("keys", "list")["keys"]
    F, OLDF = call_peer.key_fp(mine), call_peer.key_fp(old)

    with peer(victim, old) as p:
        # What the version-1 protocol accepted from any member: install, use, remove, with
        # the key in clear and no proof.
        for kind, key in ((call_peer.KEYOP_INSTALL, mine), (call_peer.KEYOP_USE, mine),
                          (call_peer.KEYOP_REMOVE, old)):
            status, body = p.keyop(call_peer.mp_uint(1), call_peer.mp_uint(kind),
                                   call_peer.mp_bin(key))
            assert status != 0, (kind, body)
        # Version 2 with proofs under a key the node does not use: refused.
        status, body = p.install(mine, proof_key=mine)
        assert status != 0 and b"proof" in body, body
        # A proof for another node (bound to the wrong recipient) is refused too.
        wrong = call_peer.keyproof(old, call_peer.KEYPROOF_REMOVE, b"\1" * 16, p.id, OLDF)
        status, body = p.keyop(call_peer.mp_uint(2), call_peer.mp_uint(call_peer.KEYOP_REMOVE),
                               call_peer.mp_bin(OLDF), call_peer.mp_bin(wrong))
        assert status != 0 and b"proof" in body, body
        # The key the mesh uses cannot be removed, even with a valid proof.
        status, body = p.remove(OLDF, proof_key=old)
        assert status != 0 and b"primary" in body, body
        # A key the attacker never installed cannot be used.
        status, body = p.use(F, old, mine)
        assert status != 0 and b"not installed" in body, body
        # Garbage in place of a sealed key.
        status, body = p.keyop(call_peer.mp_uint(2), call_peer.mp_uint(call_peer.KEYOP_INSTALL),
                               call_peer.mp_bin(b"\0" * 80),
                               call_peer.mp_bin(p.proof(old, call_peer.KEYPROOF_INSTALL, F)))
        assert status != 0 and b"sealed" in body, body
        assert p.keys_list() == [(OLDF, True)]
    assert {n.name: ring_file(n) for n in nodes} == before
    assert op.ctl_json("keys", "list")["keys"] == list_before

    # The operator rotates from one node, keeping the new key from `evil`.
    new_path = mesh.keygen("new.key")
    new_b64 = mesh.read_key(new_path)
    new = base64.b64decode(new_b64)
    rc, r, err = ctl_json_rc(op, "keys", "install", new_b64, "--exclude", "nosuch")
    assert rc == 1 and "no member named nosuch" in err, (rc, r, err)
    assert ring_file(op) == before[op.name], "nothing changes when an exclusion is wrong"
    r = op.ctl_json("keys", "install", new_b64, "--exclude", evil.name)
    assert r["nodes"] == 2 and r["ok"] == 2 and r["excluded"] == [evil.name], r
    assert new_b64 in ring_keys(victim) and new_b64 not in ring_keys(evil)
    assert new_b64 not in evil.read_log()
    table = op.ctl("keys", "install", new_b64, "--exclude", evil.name).stdout
    assert f"not sent to {evil.name} (excluded)" in table, table
    rc, r, err = ctl_json_rc(op, "keys", "use", new_b64)
    # `evil` does not have it (reported, exit code 1); everyone else uses it.
    assert rc == 1 and set(r["failed"]) == {evil.name} and r["ok"] == 2, (rc, r, err)
    assert ring_keys(victim)[0] == new_b64

    # Between `use` and `remove` the attacker still holds OLD, which is in the ring: it can no
    # longer switch the victim back to OLD, remove NEW, or install a key of its own.
    NEWF = call_peer.key_fp(new)
    ring = ring_file(victim)
    with peer(victim, old) as p:
        status, body = p.use(OLDF, old, old)
        assert status != 0 and b"proof" in body, body
        status, body = p.remove(NEWF, proof_key=old)
        assert status != 0 and b"proof" in body, body
        status, body = p.install(mine, proof_key=old)
        assert status != 0 and b"proof" in body, body
        assert sorted(p.keys_list()) == sorted([(OLDF, False), (NEWF, True)])
    assert ring_file(victim) == ring

    rc, r, err = ctl_json_rc(op, "keys", "remove", old_b64)
    assert r["ok"] >= 2 and victim.name not in r["failed"], (rc, r, err)
    assert ring_keys(victim) == [new_b64] and ring_keys(op) == [new_b64]
    k = op.ctl_json("keys", "list")
    assert k["keys"][fp_hex(new)]["primary"] >= 2, k
    # With OLD gone the attacker cannot even open a link.
    try:
        peer(victim, old).close()
        raise AssertionError("a link with the removed key came up")
    except (call_peer.CallError, ConnectionError, OSError) as e:
        assert "aborted" in str(e) or isinstance(e, (ConnectionError, OSError)), e
    wait_for(lambda: "refused" in victim.read_log(), timeout=TIMEOUT,
             what="the victim to log the refused key operations")
