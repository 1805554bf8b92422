"""A hostile mesh member for tests: it holds the mesh key, completes the link handshake
(noise_peer.py) and then speaks the link's frames and peers' calls (netlink/link.h "Wire format",
netlink/peers.h) on its own, so a test can send a node any request a member could send,
including ones meshd never would.

Written from the wire descriptions, not from meshd's code, like noise_peer.py. A call is a
channel of its own: OPEN (u16 type), WINDOW both ways, the request as DATA, FIN; the node answers
with DATA (a status byte, then the reply or an error message) and FIN.
"""

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


def mp_array(items):
    assert len(items) < 16
    return bytes([0x90 | len(items)]) + b"".join(items)


def mp_bool(v):
    return b"\xc3" if v else b"\xc2"


def cmd_put_app(name, spec_bytes, pad=False):
    """consensus/fsm.h PUT_APP [1, 1, name, spec]; unpadded unless pad (meshd always pads)."""
    c = mp_array([mp_uint(1), mp_uint(1), mp_str(name), mp_bin(spec_bytes)])
    return c + b"\0" * (-len(c) % 8) if pad else c


def cmd_put_rec(key, value_bytes):
    return mp_array([mp_uint(1), mp_uint(6), mp_str(key), mp_bin(value_bytes)])


# ---- the peer ----------------------------------------------------------------------------------

class CallError(Exception):
    pass


class Peer:
    """A link to node (a conftest.Meshd) under mesh_key, as member `name`."""

    def __init__(self, node, mesh_key, name="hostile", timeout=10.0):
        self.sock = socket.create_connection((node.host, node.port), timeout=timeout)
        self.ini = noise_peer.Initiator(self.sock, noise_peer.link_psk(mesh_key))
        self.ini.msg1()
        self.ini.read_msg2()
        port = self.sock.getsockname()[1]
        self.ini.msg3(noise_peer.hs_payload(name, "127.0.0.1", port, self.ini.s_pub))
        ftype, chan, _ = self.ini.read_frame()
        if (ftype, chan) != (F_HELLO, 0):
            raise CallError(f"expected HELLO, got frame {ftype} on channel {chan}")
        self.next_chan = 1  # the initiator opens odd ids
        self.node_id = noise_peer.node_id(self.ini.s_pub)

    def close(self):
        self.sock.close()

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
