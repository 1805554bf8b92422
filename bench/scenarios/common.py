"""What scenarios share: starting meshd and serf, temp dirs, free ports, timing, medians."""

import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from contextlib import contextmanager


def free_port(host="127.0.0.1"):
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind((host, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def wait_until(cond, timeout, interval=0.001):
    """Polls cond() until true; returns the monotonic time it became true, or raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")


def unix_http_ok(path, request=b"GET /v1/status HTTP/1.0\r\n\r\n"):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(path)
        s.sendall(request)
        data = s.recv(64)
        s.close()
        return data.startswith(b"HTTP/1.") and b" 200 " in data
    except OSError:
        return False


def unix_http_get(path, url, timeout=2.0):
    """GET url over HTTP/1.0 on a unix socket; returns (status, body bytes) or None."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(f"GET {url} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        while True:
            d = s.recv(65536)
            if not d:
                break
            chunks.append(d)
        s.close()
    except OSError:
        return None
    data = b"".join(chunks)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return None
    try:
        return int(head.split(None, 2)[1]), body
    except (IndexError, ValueError):
        return None


def unix_http_json(path, url, timeout=2.0):
    """GET url on a unix socket and decode a 200 JSON body; None on any failure."""
    r = unix_http_get(path, url, timeout)
    if not r or r[0] != 200:
        return None
    try:
        return json.loads(r[1])
    except ValueError:
        return None


def tcp_accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ---- msgpack, the little that Serf's RPC needs (Debian's python3 has no msgpack module) ----

class _Short(Exception):
    pass


def mp_pack(o):
    if o is None:
        return b"\xc0"
    if o is True or o is False:
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if 0 <= o < 1 << 32:
            return b"\xce" + struct.pack(">I", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, str):
        b = o.encode()
        if len(b) < 32:
            return bytes([0xa0 | len(b)]) + b
        if len(b) < 256:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(o, (bytes, bytearray)):
        return b"\xc5" + struct.pack(">H", len(o)) + bytes(o)
    if isinstance(o, dict):
        out = [bytes([0x80 | len(o)]) if len(o) < 16 else b"\xde" + struct.pack(">H", len(o))]
        for k, v in o.items():
            out += [mp_pack(k), mp_pack(v)]
        return b"".join(out)
    if isinstance(o, (list, tuple)):
        out = [bytes([0x90 | len(o)]) if len(o) < 16 else b"\xdc" + struct.pack(">H", len(o))]
        return b"".join(out + [mp_pack(v) for v in o])
    raise TypeError(f"mp_pack: {type(o).__name__}")


def mp_unpack(buf, i=0):
    """Decodes one msgpack object at buf[i:]; returns (object, next index); raises _Short."""
    def take(n):
        nonlocal i
        if i + n > len(buf):
            raise _Short()
        v = buf[i:i + n]
        i += n
        return v

    def num(fmt):
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

    def seq(n):
        nonlocal i
        out = []
        for _ in range(n):
            v, i = mp_unpack(buf, i)
            out.append(v)
        return out

    def mapping(n):
        nonlocal i
        out = {}
        for _ in range(n):
            k, i = mp_unpack(buf, i)
            v, i = mp_unpack(buf, i)
            out[k if not isinstance(k, (bytes, bytearray)) else bytes(k).decode("utf-8",
                                                                                  "replace")] = v
        return out

    b = take(1)[0]
    if b < 0x80:
        return b, i
    if b >= 0xe0:
        return b - 0x100, i
    if 0x80 <= b <= 0x8f:
        return mapping(b & 0x0f), i
    if 0x90 <= b <= 0x9f:
        return seq(b & 0x0f), i
    if 0xa0 <= b <= 0xbf:
        return bytes(take(b & 0x1f)).decode("utf-8", "replace"), i
    if b == 0xc0:
        return None, i
    if b in (0xc2, 0xc3):
        return b == 0xc3, i
    if b in (0xc4, 0xc5, 0xc6):
        return bytes(take(num({0xc4: ">B", 0xc5: ">H", 0xc6: ">I"}[b]))), i
    if b in (0xc7, 0xc8, 0xc9):
        n = num({0xc7: ">B", 0xc8: ">H", 0xc9: ">I"}[b])
        take(1)
        return bytes(take(n)), i
    if b == 0xca:
        return num(">f"), i
    if b == 0xcb:
        return num(">d"), i
    if 0xcc <= b <= 0xd3:
        return num({0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
                    0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}[b]), i
    if 0xd4 <= b <= 0xd8:
        take(1)
        return bytes(take(1 << (b - 0xd4))), i
    if b in (0xd9, 0xda, 0xdb):
        return bytes(take(num({0xd9: ">B", 0xda: ">H", 0xdb: ">I"}[b]))).decode("utf-8",
                                                                                  "replace"), i
    if b in (0xdc, 0xdd):
        return seq(num(">H" if b == 0xdc else ">I")), i
    if b in (0xde, 0xdf):
        return mapping(num(">H" if b == 0xde else ">I")), i
    raise ValueError(f"msgpack: bad byte 0x{b:02x}")


# ---- network namespaces of the benchmark's own ----

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


@contextmanager
def in_netns(path):
    """Runs the block (this thread) in the network namespace at path (None: stay). Sockets made
    inside keep that namespace after the block."""
    if path is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns {path}: {os.strerror(e)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise SystemExit("bench: cannot return to the original network namespace")
    finally:
        os.close(target)
        os.close(own)


def netns_usable():
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            return f"no {tool}"
    return None


class Netns:
    """A network namespace with only loopback (up). Use ctx.netns() so it is always deleted."""

    def __init__(self, name):
        self.name = name
        self.path = f"/run/netns/{name}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        try:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                           capture_output=True)
        except subprocess.CalledProcessError:
            self.delete()
            raise
        # nsenter execs the command (no fork): the Popen pid is the program's own
        self.prefix = ["nsenter", f"--net={self.path}"]

    def run(self, cmd):
        r = subprocess.run(self.prefix + cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"in {self.name}: {' '.join(cmd)}: {r.stderr.strip()}")
        return r.stdout

    @staticmethod
    def lo_bytes(pid):
        """Bytes sent over loopback in the namespace of process pid (each packet counted once,
        as lo counts it: IP packet plus a 14-byte link header)."""
        with open(f"/proc/{pid}/net/dev") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == "lo":
                    return int(rest.split()[8])  # transmit bytes
        raise RuntimeError("no lo in /proc/net/dev")

    def delete(self):
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


class Context:
    def __init__(self, build, runs):
        self.build = build
        self.runs = runs
        self.meshd = os.path.join(build, "meshd", "meshd")
        self.meshctl = os.path.join(build, "ctl", "meshctl")
        self.procs = []
        self.dirs = []
        self.namespaces = []
        if not os.access(self.meshd, os.X_OK):
            raise SystemExit(f"bench: no meshd at {self.meshd}; build first (ninja -C build)")

    def version(self):
        r = subprocess.run([self.meshd, "--version"], capture_output=True, text=True)
        return r.stdout.split()[-1] if r.returncode == 0 else "?"

    def tempdir(self):
        d = tempfile.mkdtemp(prefix="fogmesh-bench-")
        self.dirs.append(d)
        return d

    def spawn(self, cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw):
        p = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def netns(self, tag):
        """A new network namespace fogbench-PID-TAG with loopback up, deleted by cleanup()."""
        ns = Netns(f"fogbench-{os.getpid()}-{tag}")
        self.namespaces.append(ns)
        return ns

    def drop_netns(self, ns):
        ns.delete()
        if ns in self.namespaces:
            self.namespaces.remove(ns)

    def kill_all(self, procs):
        """SIGKILL and reap the given processes (a benchmark's teardown, no graceful leave)."""
        for p in procs:
            if p is not None and p.poll() is None:
                p.kill()
        for p in procs:
            if p is not None:
                p.wait()
        self.procs = [p for p in self.procs if p not in procs]

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.procs = []
        for ns in self.namespaces:
            ns.delete()
        self.namespaces = []
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs = []


def row(sc, metric, system, value, unit, baseline=None):
    r = {"metric": metric, "system": system, "value": value, "unit": unit,
         "ratio": (value / baseline) if baseline else None}
    sc["rows"].append(r)
    return r
