"""A hostile mesh member for tests: it holds the mesh key, completes the link handshake
(noise_peer.py) and then speaks the link's frames and peers' calls (netlink/link.h "Wire format",
netlink/peers.h) on its own, so a test can send a node any request a member could send,
including ones meshd never would. A call is a channel of its own: OPEN (u16 type), WINDOW both
ways, the request as DATA, FIN; the node answers with DATA (a status byte, then the reply or an
error message) and FIN.

Also the key-ring operations of meshd/node_api.c (version 2: fingerprints and proofs), written
from keyring.h's and meshkey.h's descriptions rather than from the C code, so they cross-check
it. crypto_box_seal comes from libsodium through ctypes (python3-cryptography has no XSalsa20).
"""

import ctypes
import ctypes.util
import hashlib
import socket
import struct
import time

import noise_peer

F_HELLO, F_PING, F_PONG, F_REKEY, F_GOAWAY = 1, 2, 3, 4, 5
F_OPEN, F_WINDOW, F_DATA, F_FIN, F_RESET = 16, 17, 18, 19, 20
WINDOW = 1 << 20
MAX_DATA = 60000  # below the link's 64 KiB frame payload

CONTROL = 0x8000
CALL_PUSHPULL = CONTROL | 1
CALL_KEYOP = CONTROL | 2
CALL_RAFT_APPLY = CONTROL | 3

KEYOP_LIST, KEYOP_INSTALL, KEYOP_USE, KEYOP_REMOVE = 0, 1, 2, 3
KEYPROOF_INSTALL, KEYPROOF_USE, KEYPROOF_REMOVE = 1, 2, 3


# ---- a little msgpack (the subset meshd's commands use) ---------------------------------------

def mp_uint(v):
    if v < 0x80:
        return bytes([v])
    if v < 0x100:
        return b"\xcc" + bytes([v])
    if v < 0x10000:
        return b"\xcd" + struct.pack("!H", v)
    if v < 0x100000000:
        return b"\xce" + struct.pack("!I", v)
    return b"\xcf" + struct.pack("!Q", v)


def mp_str(s):
    b = s.encode() if isinstance(s, str) else s
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 0x100:
        return b"\xd9" + bytes([len(b)]) + b
    return b"\xda" + struct.pack("!H", len(b)) + b


def mp_bin(b):
    if len(b) < 0x100:
        return b"\xc4" + bytes([len(b)]) + b
    if len(b) < 0x10000:
        return b"\xc5" + struct.pack("!H", len(b)) + b
    return b"\xc6" + struct.pack("!I", len(b)) + b


def mp_array(*items):
    assert len(items) < 16
    return bytes([0x90 | len(items)]) + b"".join(items)


def mp_bool(v):
    return b"\xc3" if v else b"\xc2"


def cmd_put_app(name, spec_bytes, pad=False):
    """consensus/fsm.h PUT_APP [1, 1, name, spec]; unpadded unless pad (meshd always pads)."""
    c = mp_array(mp_uint(1), mp_uint(1), mp_str(name), mp_bin(spec_bytes))
    return c + b"\0" * (-len(c) % 8) if pad else c


def cmd_put_rec(key, value_bytes):
    return mp_array(mp_uint(1), mp_uint(6), mp_str(key), mp_bin(value_bytes))


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


# ---- the peer ----------------------------------------------------------------------------------

class CallError(Exception):
    pass


class Peer:
    """A link to the node at host:port under mesh_key, as a member named `name`."""

    def __init__(self, host, port, mesh_key, name="hostile", timeout=10.0, adv=None):
        """adv: the (host, port) to advertise in the handshake (default: our socket's)."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ini = noise_peer.Initiator(self.sock, noise_peer.link_psk(mesh_key))
        self.ini.msg1()
        self.ini.read_msg2()
        self.node_static = self.ini.rs
        self.node_id = noise_peer.node_id(self.node_static)  # the node's
        self.id = noise_peer.node_id(self.ini.s_pub)  # ours
        me = adv or self.sock.getsockname()
        self.ini.msg3(noise_peer.hs_payload(name, me[0], me[1], self.ini.s_pub))
        ftype, chan, _ = self.ini.read_frame()
        if ftype == "abort":
            raise CallError(f"link aborted (reason {chan})")
        if (ftype, chan) != (F_HELLO, 0):
            raise CallError(f"expected HELLO, got frame {ftype} on channel {chan}")
        self.next_chan = 1  # the initiator opens odd ids

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_frame(self, ftype, chan, body=b""):
        pt = bytes([ftype, 0]) + struct.pack("!I", chan) + body
        noise_peer.send_record(self.sock, self.ini.tx.encrypt(b"", pt))

    def read_frame(self):
        """The next frame, answering PINGs and refusing channels the node opens to us."""
        while True:
            ftype, chan, body = self.ini.read_frame()
            if ftype == "abort":
                raise CallError(f"link aborted (reason {chan})")
            if ftype == F_PING:
                self.send_frame(F_PONG, 0, body)
            elif ftype == F_REKEY:
                raise CallError("the node rekeyed: not implemented in this peer")
            elif ftype == F_OPEN and chan % 2 == 0:
                self.send_frame(F_RESET, chan, struct.pack("!I", 1))
            elif ftype == F_GOAWAY:
                raise CallError("GOAWAY from the node")
            else:
                return ftype, chan, body

    def open(self, call_type):
        chan = self.next_chan
        self.next_chan += 2
        self.send_frame(F_OPEN, chan, struct.pack("!H", call_type))
        self.send_frame(F_WINDOW, chan, struct.pack("!I", WINDOW))
        return chan

    def _next_on(self, chan, deadline):
        while True:
            if time.monotonic() > deadline:
                raise CallError("timed out")
            ftype, c, body = self.read_frame()
            if c != chan:
                continue
            if ftype == F_RESET:
                raise CallError(f"the node reset the call ({body.hex()})")
            return ftype, body

    def call(self, call_type, request, finish=True, timeout=15.0):
        """Sends one request; returns (status byte, reply bytes). With finish=False the
        request is sent without its FIN and the channel id is returned instead: a request
        left half-done."""
        chan = self.open(call_type)
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        credit, off, reply, fin = 0, 0, b"", False
        while off < len(request):
            while credit == 0:
                ftype, body = self._next_on(chan, deadline)
                if ftype == F_WINDOW:
                    credit += struct.unpack("!I", body)[0]
                elif ftype == F_DATA:
                    reply += body
                elif ftype == F_FIN:
                    fin = True
            n = min(credit, MAX_DATA, len(request) - off)
            self.send_frame(F_DATA, chan, request[off:off + n])
            off += n
            credit -= n
        if not finish:
            return chan
        self.send_frame(F_FIN, chan)
        while not fin:
            ftype, body = self._next_on(chan, deadline)
            if ftype == F_DATA:
                reply += body
            elif ftype == F_FIN:
                fin = True
        if not reply:
            raise CallError("empty reply")
        return reply[0], reply[1:]


class CallPeer(Peer):
    """A Peer with the key-ring operations."""

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
