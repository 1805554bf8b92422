"""meshctl: keygen, version, output formats, exit codes and error messages."""

import base64
import json
import os

from conftest import MESHCTL, run


def test_keygen_makes_distinct_32_byte_keys():
    keys = {run([MESHCTL, "keygen"]).stdout.strip() for _ in range(3)}
    assert len(keys) == 3
    for k in keys:
        assert len(k) == 44
        assert len(base64.b64decode(k, validate=True)) == 32


def test_generated_key_is_accepted_by_meshd(mesh):
    key = mesh.keygen()
    n = mesh.node("keyed", key_file=key).start()
    assert n.ctl_json("status")["node"]["name"] == "keyed"


def test_version_with_and_without_daemon(mesh):
    r = run([MESHCTL, "--socket", "/nonexistent/api.sock", "version"])
    assert r.returncode == 0 and "not reachable" in r.stdout
    n = mesh.node("v").start()
    v = n.ctl_json("version")
    assert v["meshctl"] == v["meshd"]


def test_unreachable_daemon_is_exit_1_with_advice(tmp_path):
    r = run([MESHCTL, "--socket", str(tmp_path / "none.sock"), "status"])
    assert r.returncode == 1
    assert "cannot reach meshd" in r.stderr and "is meshd running?" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_mesh_socket_env_is_used(mesh):
    n = mesh.node("envnode").start()
    env = dict(os.environ, MESH_SOCKET=n.socket)
    r = run([MESHCTL, "status", "-o", "json"], env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["node"]["name"] == "envnode"


def test_usage_errors_are_exit_2():
    for args in (["frobnicate"], ["-o", "xml", "status"], ["status", "extra"], [],
                 ["status", "--output"]):
        r = run([MESHCTL, *args])
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.strip()
