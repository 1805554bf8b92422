"""A minimal Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b initiator that speaks meshd's link handshake
(netlink/link.h), for tests that must get a TCP connection to a chosen step of the handshake:
a correct message 1, a message 3 under a wrong mesh key, garbage after a good handshake.

Independent of meshd's C code (written from the Noise specification, revision 34, and
link.h's wire description), so that it cross-checks it. Needs python3-cryptography.
"""

import hashlib
import hmac
import os
import socket
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PROTOCOL = b"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"fogmesh-link-v2"
HASHLEN = 64
ABORT_MAGIC = 0xFFFFFF00
# The link's cipher byte before the payloads of messages 2 and 3 (link.h "Cipher negotiation"):
# bit 0 ChaCha20-Poly1305 (always set), bit 1 AES-256-GCM. This peer offers ChaChaPoly only, so
# the transport phase is ChaChaPoly whatever the node allows, and Python needs no AES.
CIPHER_CHACHAPOLY = 0x01
CIPHER_AESGCM = 0x02


def _hash(data):
    return hashlib.blake2b(data).digest()


def _hmac(key, data):
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(ck, ikm, n):
    tk = _hmac(ck, ikm)
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = _hmac(tk, prev + bytes([i]))
        out.append(prev)
    return out


def _pub(priv):
    return priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _nonce(n):
    return b"\0\0\0\0" + struct.pack("<Q", n)


class Cipher:
    def __init__(self, k):
        self.k, self.n = k, 0

    def encrypt(self, ad, pt):
        ct = ChaCha20Poly1305(self.k).encrypt(_nonce(self.n), pt, ad)
        self.n += 1
        return ct

    def decrypt(self, ad, ct):
        pt = ChaCha20Poly1305(self.k).decrypt(_nonce(self.n), ct, ad)
        self.n += 1
        return pt


class Symmetric:
    def __init__(self):
        self.h = PROTOCOL.ljust(HASHLEN, b"\0") if len(PROTOCOL) <= HASHLEN else _hash(PROTOCOL)
        self.ck = self.h
        self.c = None

    def mix_hash(self, data):
        self.h = _hash(self.h + data)

    def mix_key(self, ikm):
        self.ck, tk = _hkdf(self.ck, ikm, 2)
        self.c = Cipher(tk[:32])

    def mix_key_and_hash(self, ikm):
        self.ck, th, tk = _hkdf(self.ck, ikm, 3)
        self.mix_hash(th)
        self.c = Cipher(tk[:32])

    def encrypt_and_hash(self, pt):
        ct = self.c.encrypt(self.h, pt) if self.c else pt
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ct):
        pt = self.c.decrypt(self.h, ct) if self.c else ct
        self.mix_hash(ct)
        return pt

    def split(self):
        k1, k2 = _hkdf(self.ck, b"", 2)
        return Cipher(k1[:32]), Cipher(k2[:32])


def node_id(static_pub):
    """meshd's node id: the first 16 bytes of BLAKE2b-256 of the identity public key."""
    return hashlib.blake2b(static_pub, digest_size=32).digest()[:16]


def hs_payload(name, host, port, static_pub):
    """meshd's handshake payload, msgpack [1, name, addr bin, id bin] (meshd/node.c)."""
    nb = name.encode()
    addr = bytes([4]) + socket.inet_aton(host) + struct.pack("!H", port)
    return (b"\x94\x01" + bytes([0xA0 + len(nb)]) + nb + b"\xc4" + bytes([len(addr)]) + addr
            + b"\xc4\x10" + node_id(static_pub))


def send_record(sock, body):
    sock.sendall(struct.pack("!I", len(body)) + body)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        c = sock.recv(n - len(buf))
        if not c:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += c
    return buf


def recv_record(sock):
    """Returns ("record", body) or ("abort", reason) for an abort notice."""
    (n,) = struct.unpack("!I", recv_exact(sock, 4))
    if n & 0xFFFFFF00 == ABORT_MAGIC:
        return "abort", n & 0xFF
    return "record", recv_exact(sock, n)


class Initiator:
    """One handshake as initiator over a connected socket."""

    def __init__(self, sock, psk, static=None):
        self.sock = sock
        self.psk = psk
        self.s = static or X25519PrivateKey.generate()
        self.s_pub = _pub(self.s)
        self.ss = Symmetric()
        self.ss.mix_hash(PROLOGUE)
        self.tx = self.rx = None

    def msg1(self):
        self.e = X25519PrivateKey.generate()
        e_pub = _pub(self.e)
        self.ss.mix_hash(e_pub)
        self.ss.mix_key(e_pub)  # psk mode (Noise section 9.2)
        send_record(self.sock, e_pub + self.ss.encrypt_and_hash(b""))

    def read_msg2(self):
        """Reads message 2; returns the responder's handshake payload without the link's cipher
        byte, which goes to self.peer_ciphers."""
        kind, m = recv_record(self.sock)
        if kind != "record":
            raise ConnectionError(f"handshake aborted by the node (reason {m})")
        re = m[:32]
        self.ss.mix_hash(re)
        self.ss.mix_key(re)
        self.ss.mix_key(self.e.exchange(X25519PublicKey.from_public_bytes(re)))  # ee
        rs = self.ss.decrypt_and_hash(m[32:80])
        self.rs = rs  # the responder's static (identity) key
        self.ss.mix_key(self.e.exchange(X25519PublicKey.from_public_bytes(rs)))  # es
        self.re = re
        payload = self.ss.decrypt_and_hash(m[80:])
        if not payload or not payload[0] & CIPHER_CHACHAPOLY:
            raise ValueError(f"message 2: bad cipher byte in {payload[:1].hex()!r}")
        self.peer_ciphers = payload[0]
        return payload[1:]

    def msg3(self, payload, ciphers=CIPHER_CHACHAPOLY):
        """Sends message 3 with the cipher byte `ciphers` (None: none at all) before payload."""
        prefix = b"" if ciphers is None else bytes([ciphers])
        ct_s = self.ss.encrypt_and_hash(self.s_pub)
        self.ss.mix_key(self.s.exchange(X25519PublicKey.from_public_bytes(self.re)))  # se
        self.ss.mix_key_and_hash(self.psk)
        send_record(self.sock, ct_s + self.ss.encrypt_and_hash(prefix + payload))
        self.tx, self.rx = self.ss.split()

    def read_frame(self):
        """Reads and decrypts one transport frame; returns (type, channel, body), or
        ("abort", reason, b"") for an abort notice."""
        kind, m = recv_record(self.sock)
        if kind == "abort":
            return "abort", m, b""
        pt = self.rx.decrypt(b"", m)
        return pt[0], struct.unpack("!I", pt[2:6])[0], pt[6:]


def random_key():
    return os.urandom(32)


def link_psk(mesh_key):
    """The Noise PSK meshd derives from a mesh key (netlink/keyring.c): libsodium's
    crypto_kdf_derive_from_key(32, id 2, "fogmesh1", key), which is keyed BLAKE2b with the
    subkey id as salt and the context as personalisation."""
    return hashlib.blake2b(b"", digest_size=32, key=mesh_key,
                           salt=struct.pack("<Q", 2) + b"\0" * 8,
                           person=b"fogmesh1" + b"\0" * 8).digest()
