"""meshd as a daemon: start-up, identity, flags and config file, errors, shutdown, the API."""

import json
import os
import signal
import socket
import stat

from conftest import MESHD, TIMEOUT, free_port, run, wait_for


def http_over_unix(path, raw):
    """Sends raw bytes to the API socket and returns (status, parsed JSON body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(raw)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body) if body.strip() else None


def test_status_reports_the_node(mesh):
    n = mesh.node("alpha").start()
    st = n.ctl_json("status")
    assert st["node"]["name"] == "alpha"
    assert st["node"]["addr"] == n.addr
    assert len(st["node"]["id"]) == 32
    assert st["version"]
    table = n.ctl("status").stdout
    assert "alpha" in table and st["node"]["id"] in table


def test_identity_is_created_private_and_reused(mesh):
    n = mesh.node("beta").start()
    first = n.ctl_json("status")["node"]["id"]
    key = os.path.join(n.data_dir, "node.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert n.stop() == 0
    n.start()
    assert n.ctl_json("status")["node"]["id"] == first


def test_sigterm_and_sigint_shut_down_cleanly(mesh):
    for sig in (signal.SIGTERM, signal.SIGINT):
        n = mesh.node(f"n{sig}").start()
        assert os.path.exists(n.socket)
        assert n.stop(sig) == 0, n.read_log()
        assert not os.path.exists(n.socket), "the API socket is removed at shutdown"
        assert "shutting down" in n.read_log()


def test_restart_after_kill9_replaces_stale_socket(mesh):
    n = mesh.node("gamma").start()
    n.kill9()
    assert os.path.exists(n.socket)  # left behind by the killed process
    n.start()
    assert n.ctl_json("status")["node"]["name"] == "gamma"


def expect_exit2(cmd, needle):
    r = run(cmd)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("meshd: ") and needle in lines[0], lines[0]


def test_bad_flags_exit_2_with_one_line(mesh, tmp_path):
    d = str(tmp_path / "d")
    expect_exit2([MESHD, "--frobnicate"], "unknown flag '--frobnicate'")
    expect_exit2([MESHD, "--data-dir", d, "--bind", "127.0.0.1:70000"], "--bind")
    expect_exit2([MESHD, "--data-dir", d, "--name", "bad name"], "--name")
    expect_exit2([MESHD, "--data-dir", d, "--label", "x"], "KEY=VALUE")
    expect_exit2([MESHD, "--data-dir", d, "--log-level", "chatty"], "--log-level")
    expect_exit2([MESHD, "--data-dir", d, "--link-cipher", "aes"], "--link-cipher aes")
    expect_exit2([MESHD, "--data-dir"], "needs a value")
    assert not os.path.exists(d), "a refused start leaves nothing behind"


def test_unusable_data_dir_exits_2(mesh, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    expect_exit2([MESHD, "--name", "x", "--data-dir", str(f / "sub"),
                  "--bind", f"127.0.0.1:{free_port()}"], "cannot create data dir")


def test_port_in_use_exits_2(mesh, tmp_path):
    port = free_port()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", port))
    try:
        expect_exit2([MESHD, "--name", "x", "--data-dir", str(tmp_path / "d"),
                      "--bind", f"127.0.0.1:{port}"], "Address already in use")
    finally:
        blocker.close()
    assert not os.path.exists(tmp_path / "d" / "api.sock")


def test_second_daemon_on_same_data_dir_is_refused(mesh):
    n = mesh.node("delta").start()
    expect_exit2([MESHD, "--name", "other", "--data-dir", n.data_dir,
                  "--bind", f"127.0.0.1:{free_port()}"], "in use by another meshd")
    assert n.ctl_json("status")["node"]["name"] == "delta", "the first one is untouched"


def test_bad_key_file_exits_2(mesh, tmp_path):
    key = tmp_path / "k"
    key.write_text("short\n")
    os.chmod(key, 0o600)
    expect_exit2([MESHD, "--data-dir", str(tmp_path / "d"), "--key-file", str(key)], "base64")
    os.chmod(key, 0o644)
    expect_exit2([MESHD, "--data-dir", str(tmp_path / "d"), "--key-file", str(key)], "chmod 600")


def test_config_file_and_flags_win(mesh, tmp_path):
    port = free_port()
    cfg = tmp_path / "meshd.conf"
    cfg.write_text(f"# test\nname = from-file\nbind = 127.0.0.1:{port}\nlabel = zone=a\n")
    n = mesh.node("from-flag", port=port, args=["--config", str(cfg)]).start()
    st = n.ctl_json("status")
    assert st["node"]["name"] == "from-flag"
    cfg.write_text("name = x\nbogus = 1\n")
    expect_exit2([MESHD, "--config", str(cfg)], ":2: unknown key 'bogus'")


def cpu_has_aes_gcm():
    """What libsodium's crypto_aead_aes256gcm_is_available() checks: AES-NI and PCLMUL."""
    with open("/proc/cpuinfo") as f:
        flags = set(f.read().split())
    return {"aes", "pclmulqdq"} <= flags


def test_link_cipher_is_negotiated_and_shown_in_routes(mesh):
    """Links use AES-256-GCM between two nodes on auto (where the CPU has AES-NI) and
    ChaCha20-Poly1305 with a node that says --link-cipher chacha20-poly1305; `meshctl routes`
    shows each neighbour's cipher, and the debug log each link's."""
    a, b = mesh.start_cluster(2)
    c = mesh.node("n2", key_file=mesh.key_file, join=[a.addr],
                  args=["--link-cipher", "chacha20-poly1305"]).start()
    mesh.wait_all_alive([a, b, c])
    auto = "aes-256-gcm" if cpu_has_aes_gcm() else "chacha20-poly1305"
    want = {a: {b.name: auto, c.name: "chacha20-poly1305"},
            c: {a.name: "chacha20-poly1305", b.name: "chacha20-poly1305"}}

    def ciphers(node):
        return {x["node"]: x["cipher"] for x in node.ctl_json("routes")["neighbours"]}
    for node, expect in want.items():
        wait_for(lambda: all(ciphers(node).get(k) == v for k, v in expect.items()),
                 timeout=TIMEOUT, what=f"{node.name}'s neighbours to show ciphers {expect}")
    assert f"is up ({auto})" in a.read_log() and "is up (chacha20-poly1305)" in c.read_log()


def test_api_socket_is_owner_only(mesh):
    n = mesh.node("eps").start()
    assert stat.S_IMODE(os.stat(n.socket).st_mode) == 0o600


def test_api_errors_are_json(mesh):
    n = mesh.node("zeta").start()
    code, body = http_over_unix(n.socket, b"GET /v1/nope HTTP/1.0\r\n\r\n")
    assert code == 404 and "no such endpoint" in body["error"]
    code, body = http_over_unix(n.socket, b"DELETE /v1/status HTTP/1.0\r\n\r\n")
    assert code == 405 and "not allowed" in body["error"]
    code, body = http_over_unix(n.socket, b"GET /v1/status HTTP/1.0\r\n\r\n")
    assert code == 200 and body["node"]["name"] == "zeta"
    # Garbage instead of HTTP: the daemon answers 400 or hangs up, and keeps serving.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(n.socket)
    s.sendall(b"\x00\xff garbage \r\n\r\n")
    s.settimeout(5)
    try:
        s.recv(1024)
    except OSError:
        pass
    s.close()
    assert n.ctl_json("status")["node"]["name"] == "zeta"
