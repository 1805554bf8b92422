"""A small TCP tool for the tunnel tests, run inside the test's namespaces (ip netns exec):

    tcptool.py serve HOST PORT            for each connection: read to EOF while hashing, then
                                          answer "BYTES SHA256\\n" and close (until killed)
    tcptool.py echo HOST PORT             echo every byte back, half-close after EOF
    tcptool.py send HOST PORT NBYTES SEED send NBYTES of seeded random data, half-close, check
                                          the server's answer; prints "ok BYTES SHA256"
    tcptool.py source HOST PORT NBYTES    for each connection: send NBYTES as fast as it can
    tcptool.py many HOST PORT CONNS NBYTES
                                          CONNS concurrent `send`s of NBYTES each (seeds 0..);
                                          prints "ok CONNS" when every answer checks out
    tcptool.py slowread HOST PORT SECONDS read 16 KiB every 50 ms for SECONDS, then close;
                                          prints "read BYTES"
"""

import hashlib
import random
import socket
import sys
import threading

BLOCK = 1 << 20


def blocks(nbytes, seed):
    rnd = random.Random(seed)
    left = nbytes
    while left > 0:
        n = min(BLOCK, left)
        yield rnd.randbytes(n)
        left -= n


def listener(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(256)
    print("listening", flush=True)
    return s


def serve_one(c):
    h = hashlib.sha256()
    total = 0
    while True:
        b = c.recv(BLOCK)
        if not b:
            break
        h.update(b)
        total += len(b)
    c.sendall(f"{total} {h.hexdigest()}\n".encode())
    c.close()


def echo_one(c):
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.shutdown(socket.SHUT_WR)
    c.close()


def source_one(c, nbytes):
    chunk = b"x" * 65536
    try:
        left = nbytes
        while left > 0:
            n = c.send(chunk[:min(len(chunk), left)])
            left -= n
        c.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    c.close()


def loop(s, fn, *args):
    while True:
        c, _ = s.accept()
        threading.Thread(target=fn, args=(c, *args), daemon=True).start()


def send(host, port, nbytes, seed):
    """Sends seeded data, half-closes, returns (expected, answer)."""
    c = socket.create_connection((host, port), timeout=120)
    h = hashlib.sha256()
    for b in blocks(nbytes, seed):
        h.update(b)
        c.sendall(b)
    c.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        answer += b
    c.close()
    return f"{nbytes} {h.hexdigest()}", answer.decode().strip()


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "serve":
        loop(listener(host, port), serve_one)
    elif mode == "echo":
        loop(listener(host, port), echo_one)
    elif mode == "source":
        loop(listener(host, port), source_one, int(sys.argv[4]))
    elif mode == "send":
        want, got = send(host, port, int(sys.argv[4]), int(sys.argv[5]))
        if got != want:
            print(f"mismatch: sent {want}, server got {got!r}")
            sys.exit(1)
        print(f"ok {got}")
    elif mode == "many":
        conns, nbytes = int(sys.argv[4]), int(sys.argv[5])
        results = [None] * conns

        def one(i):
            try:
                results[i] = send(host, port, nbytes, i)
            except OSError as e:
                results[i] = ("ok", f"error: {e}")
        threads = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bad = [(i, r) for i, r in enumerate(results) if r[0] != r[1]]
        if bad:
            print(f"{len(bad)} of {conns} failed, e.g. {bad[0]}")
            sys.exit(1)
        print(f"ok {conns}")
    elif mode == "slowread":
        import time
        c = socket.create_connection((host, port), timeout=120)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        total, end = 0, time.monotonic() + float(sys.argv[4])
        while time.monotonic() < end:
            b = c.recv(16384)
            if not b:
                break
            total += len(b)
            time.sleep(0.05)
        c.close()
        print(f"read {total}")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
