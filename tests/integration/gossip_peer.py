"""Sealed gossip packets from Python, for tests where a holder of the mesh key misbehaves on the
UDP side of the mesh port (made-up members, forged sender ids and epochs).

Written from the formats in the headers, not from the C code: netlink/keyring.h (sealing:
version | key hint | nonce | XChaCha20-Poly1305(sender id | epoch | seq | payload)), the
subkeys of common/meshkey + netlink/keyring.c (libsodium crypto_kdf, context "fogmesh1",
subkey 1 for gossip; the hint is the first 4 bytes of BLAKE2b-256 of the subkey) and
meshd/swim_wire.h (the msgpack gossip packet). python3-cryptography has no XChaCha20, so
libsodium is used through ctypes; msgpack is encoded by hand (the few types needed).
"""

import base64
import ctypes
import ctypes.util
import os
import socket
import struct

_sodium = ctypes.CDLL(ctypes.util.find_library("sodium") or "libsodium.so.23")
if _sodium.sodium_init() < 0:
    raise RuntimeError("sodium_init failed")

KDF_CTX = b"fogmesh1"
SUBKEY_GOSSIP = 1
SEAL_VERSION = 1
NPUB = 24
ABYTES = 16

SWIM_WIRE_VERSION = 1
SWIM_PKT_GOSSIP = 1
MSG_PING, MSG_PING_REQ, MSG_ACK, MSG_NACK, MSG_ALIVE, MSG_SUSPECT, MSG_DEAD, MSG_LEFT = range(1, 9)


def read_mesh_key(path):
    """The 32-byte mesh key of a key file (comment lines start with #)."""
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key = base64.b64decode(line)
                assert len(key) == 32, "not a mesh key file"
                return key
    raise ValueError(f"no key in {path}")


def _kdf(key, subkey_id, n=32):
    out = ctypes.create_string_buffer(n)
    rc = _sodium.crypto_kdf_derive_from_key(out, ctypes.c_size_t(n), ctypes.c_uint64(subkey_id),
                                            ctypes.c_char_p(KDF_CTX), ctypes.c_char_p(key))
    assert rc == 0
    return out.raw


def _blake2b(data, n=32):
    out = ctypes.create_string_buffer(n)
    rc = _sodium.crypto_generichash(out, ctypes.c_size_t(n), ctypes.c_char_p(data),
                                    ctypes.c_ulonglong(len(data)), None, ctypes.c_size_t(0))
    assert rc == 0
    return out.raw


def node_id_of(pub):
    """A node id from an identity public key (netlink/identity.h)."""
    return _blake2b(pub, 32)[:16]


class Sealer:
    """Seals gossip payloads with a mesh key's gossip subkey."""

    def __init__(self, mesh_key):
        self.key = _kdf(mesh_key, SUBKEY_GOSSIP)
        self.hint = _blake2b(self.key)[:4]

    def seal(self, sender_id, epoch, seq, payload):
        assert len(sender_id) == 16
        header = bytes([SEAL_VERSION]) + self.hint + os.urandom(NPUB)
        plain = sender_id + struct.pack(">QQ", epoch, seq) + payload
        out = ctypes.create_string_buffer(len(plain) + ABYTES)
        clen = ctypes.c_ulonglong(0)
        rc = _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            out, ctypes.byref(clen), ctypes.c_char_p(plain), ctypes.c_ulonglong(len(plain)),
            ctypes.c_char_p(header), ctypes.c_ulonglong(len(header)), None,
            ctypes.c_char_p(header[5:]), ctypes.c_char_p(self.key))
        assert rc == 0
        pkt = header + out.raw[:clen.value]
        assert len(pkt) <= 1400, "a sealed gossip packet is at most 1400 bytes"
        return pkt


# ---- msgpack, the subset swim_wire uses -----------------------------------------------------

def mp_uint(v):
    if v < 0x80:
        return bytes([v])
    if v < 0x100:
        return b"\xcc" + bytes([v])
    if v < 0x10000:
        return b"\xcd" + struct.pack(">H", v)
    if v < 0x100000000:
        return b"\xce" + struct.pack(">I", v)
    return b"\xcf" + struct.pack(">Q", v)


def mp_str(s):
    b = s.encode()
    if len(b) < 32:
        return bytes([0xa0 | len(b)]) + b
    assert len(b) < 256
    return b"\xd9" + bytes([len(b)]) + b


def mp_bin(b):
    assert len(b) < 256
    return b"\xc4" + bytes([len(b)]) + b


def mp_array(items):
    n = len(items)
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + struct.pack(">H", n)
    return head + b"".join(items)


def mp_addr(host, port):
    """wire_pack_addr: a bin of family (4), the IPv4 bytes, the port (big-endian)."""
    return mp_bin(bytes([4]) + socket.inet_aton(host) + struct.pack(">H", port))


def alive_msg(name, node_id, host, port, incarnation=1, meta=b""):
    return mp_array([mp_uint(MSG_ALIVE), mp_str(name), mp_bin(node_id), mp_addr(host, port),
                     mp_uint(incarnation), mp_bin(meta)])


def gossip_packet(sender_name, sender_id, msgs):
    """[version, SWIM_PKT_GOSSIP, sender_name, sender_id, [msg, ...]] (swim_wire.h)."""
    return mp_array([mp_uint(SWIM_WIRE_VERSION), mp_uint(SWIM_PKT_GOSSIP), mp_str(sender_name),
                     mp_bin(sender_id), mp_array(msgs)])


class GossipPeer:
    """A key holder on the gossip port: sends sealed packets claiming any sender and epoch."""

    def __init__(self, key_file):
        self.sealer = Sealer(read_mesh_key(key_file))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def send(self, to, payload, sender_id=None, epoch=1, seq=None):
        """to: "host:port". sender_id defaults to a fresh random id per packet."""
        host, port = to.rsplit(":", 1)
        if seq is None:
            self.seq += 1
            seq = self.seq
        pkt = self.sealer.seal(sender_id or os.urandom(16), epoch, seq, payload)
        self.sock.sendto(pkt, (host, int(port)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
