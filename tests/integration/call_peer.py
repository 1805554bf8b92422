"""A member written in Python: it holds the mesh key, opens a link to a node (noise_peer.py's
handshake) and makes CALLs on it (netlink/peers.h: a channel of its own per call, the request,
FIN, then the reply in an envelope, FIN), for tests where a hostile member sends what a
well-behaved meshd never would.

Also the key-ring operations of meshd/node_api.c (version 2: fingerprints and proofs), written
from keyring.h's and meshkey.h's descriptions rather than from the C code, so they cross-check
it. crypto_box_seal comes from libsodium through ctypes (python3-cryptography has no XSalsa20).
"""

import ctypes
import ctypes.util
import hashlib
import socket
import struct

import noise_peer

# netlink/link.c frame types.
F_HELLO, F_PING, F_PONG, F_REKEY, F_GOAWAY = 1, 2, 3, 4, 5
F_OPEN, F_WINDOW, F_DATA, F_FIN, F_RESET = 16, 17, 18, 19, 20
LINK_CHAN_CONTROL = 0x8000
CALL_KEYOP = LINK_CHAN_CONTROL | 2  # meshd/node.h
WINDOW = 1 << 20

KEYOP_LIST, KEYOP_INSTALL, KEYOP_USE, KEYOP_REMOVE = 0, 1, 2, 3
KEYPROOF_INSTALL, KEYPROOF_USE, KEYPROOF_REMOVE = 1, 2, 3


# ---- a little msgpack: what key operations use ------------------------------------------

def mp_uint(v):
    assert 0 <= v < 128
    return bytes([v])


def mp_bin(b):
    assert len(b) < 256
    return b"\xc4" + bytes([len(b)]) + b


def mp_array(*items):
    assert len(items) < 16
    return bytes([0x90 + len(items)]) + b"".join(items)


def mp_decode(buf):
    """Decodes fixarrays, bin8, booleans and positive fixints; returns the value."""
    def one(i):
        t = buf[i]
        if 0x90 <= t <= 0x9F:
            out, i = [], i + 1
            for _ in range(t - 0x90):
                v, i = one(i)
                out.append(v)
            return out, i
        if t == 0xC4:
            n = buf[i + 1]
            return bytes(buf[i + 2:i + 2 + n]), i + 2 + n
        if t in (0xC2, 0xC3):
            return t == 0xC3, i + 1
        if t < 0x80:
            return t, i + 1
        raise ValueError(f"msgpack type {t:#x} not handled")
    v, end = one(0)
    if end != len(buf):
        raise ValueError("trailing bytes")
    return v


# ---- key ring crypto ----------------------------------------------------------------------

def key_fp(key):
    """common/meshkey.h: BLAKE2b-256("fogmesh-key-fp" || key)[:8]."""
    return hashlib.blake2b(b"fogmesh-key-fp" + key, digest_size=32).digest()[:8]


def _kdf(key, subkey_id):
    # libsodium crypto_kdf_derive_from_key(32, id, "fogmesh1", key) (see noise_peer.link_psk).
    return hashlib.blake2b(b"", digest_size=32, key=key,
                           salt=struct.pack("<Q", subkey_id) + b"\0" * 8,
                           person=b"fogmesh1" + b"\0" * 8).digest()


def keyproof(key, op, recipient, requester, fp):
    """netlink/keyring.h: BLAKE2b-256 keyed with subkey 3 of key over
    "fogmesh-keyop-v1" || op || recipient id || requester id || target fingerprint."""
    msg = b"fogmesh-keyop-v1" + bytes([op]) + recipient + requester + fp
    return hashlib.blake2b(msg, digest_size=32, key=_kdf(key, 3)).digest()


_sodium = None


def seal_to(pub, key):
    """crypto_box_seal(key, pub): 80 bytes."""
    global _sodium
    if _sodium is None:
        _sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
        assert _sodium.sodium_init() >= 0
    out = ctypes.create_string_buffer(len(key) + 48)
    rc = _sodium.crypto_box_seal(out, key, ctypes.c_ulonglong(len(key)), pub)
    assert rc == 0
    return out.raw


# ---- the link and calls -------------------------------------------------------------------

class CallError(Exception):
    pass


class CallPeer:
    """A link to the node at host:port, as a member named `name` holding mesh_key."""

    def __init__(self, host, port, mesh_key, name="pypeer", timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ini = noise_peer.Initiator(self.sock, noise_peer.link_psk(mesh_key))
        self.ini.msg1()
        self.ini.read_msg2()
        self.node_static = self.ini.rs
        self.node_id = noise_peer.node_id(self.node_static)
        self.id = noise_peer.node_id(self.ini.s_pub)
        me = self.sock.getsockname()
        self.ini.msg3(noise_peer.hs_payload(name, me[0], me[1], self.ini.s_pub))
        ftype, chan, _ = self._read()
        if (ftype, chan) != (F_HELLO, 0):
            raise CallError(f"expected HELLO, got frame {ftype} on {chan}")
        self.next_chan = 1  # the initiator opens odd channel ids

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, ftype, chan, body=b""):
        pt = bytes([ftype, 0]) + struct.pack("!I", chan) + body
        noise_peer.send_record(self.sock, self.ini.tx.encrypt(b"", pt))

    def _read(self):
        ftype, chan, body = self.ini.read_frame()
        if ftype == "abort":
            raise CallError(f"link aborted (reason {chan})")
        return ftype, chan, body

    def call(self, ctype, request):
        """One call; returns (status, body): status 0 and the reply, or the node's nonzero
        status byte and its error message."""
        chan = self.next_chan
        self.next_chan += 2
        self._send(F_OPEN, chan, struct.pack("!H", ctype))
        self._send(F_WINDOW, chan, struct.pack("!I", WINDOW))
        sent = False
        reply = b""
        while True:
            ftype, c, body = self._read()
            if ftype == F_PING:
                self._send(F_PONG, 0, body)
                continue
            if ftype == F_GOAWAY:
                raise CallError("the node closed the link")
            if c != chan:
                continue
            if ftype == F_WINDOW and not sent:
                self._send(F_DATA, chan, request)
                self._send(F_FIN, chan)
                sent = True
            elif ftype == F_DATA:
                reply += body
            elif ftype == F_FIN:
                break
            elif ftype == F_RESET:
                raise CallError(f"call reset (reason {struct.unpack('!I', body)[0]})")
        if not reply:
            raise CallError("empty reply")
        return reply[0], reply[1:]

    # ---- key operations (meshd/node_api.c) ----

    def keyop(self, *items):
        return self.call(CALL_KEYOP, mp_array(*items))

    def keys_list(self):
        """The node's ring: [(fingerprint, primary), ...]; raises if refused."""
        status, body = self.keyop(mp_uint(2), mp_uint(KEYOP_LIST))
        if status:
            raise CallError(f"list refused: {body!r}")
        return [(fp, primary) for fp, primary in mp_decode(body)]

    def proof(self, key, op, fp):
        return keyproof(key, op, self.node_id, self.id, fp)

    def install(self, new_key, proof_key):
        fp = key_fp(new_key)
        return self.keyop(mp_uint(2), mp_uint(KEYOP_INSTALL),
                          mp_bin(seal_to(self.node_static, new_key)),
                          mp_bin(self.proof(proof_key, KEYPROOF_INSTALL, fp)))

    def use(self, fp, primary_proof_key, key_proof_key):
        return self.keyop(mp_uint(2), mp_uint(KEYOP_USE), mp_bin(fp),
                          mp_bin(self.proof(primary_proof_key, KEYPROOF_USE, fp)),
                          mp_bin(self.proof(key_proof_key, KEYPROOF_USE, fp)))

    def remove(self, fp, proof_key):
        return self.keyop(mp_uint(2), mp_uint(KEYOP_REMOVE), mp_bin(fp),
                          mp_bin(self.proof(proof_key, KEYPROOF_REMOVE, fp)))
