"""A full disk under the data dir (issue 10, item 9): writes fail with a clear error, the node
keeps running and serving reads, and a restart while the disk is still full comes up and serves
reads too. The disk is a small tmpfs of the test's own (mount needs root, as the rest of the
integration tests do); it is unmounted at the end.
"""

import json
import os
import subprocess

import pytest

from conftest import MESHCTL, TIMEOUT, wait_for


@pytest.fixture
def small_disk(mesh):
    path = os.path.join(mesh.workdir, "disk")
    os.mkdir(path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        for n in mesh.nodes:  # nothing may hold the mount when it goes
            n.stop()
        subprocess.run(["umount", "-l", path], check=False)


def deploy(node, spec):
    return subprocess.run([MESHCTL, "--socket", node.socket, "deploy", "-f", "-"],
                          input=json.dumps(spec), capture_output=True, text=True, timeout=60)


def app(name, pad=0):
    ms = {"name": "m", "image": "localhost/bbox:latest"}
    if pad:
        ms["config"] = {"pad": "x" * pad}
    return {"kind": "Application", "name": name, "microservices": [ms]}


def apps(node):
    return {a["name"] for a in node.ctl_json("get", "apps")}


def fill(path):
    """Fills the file system of path: a file grown until ENOSPC."""
    fd = os.open(os.path.join(path, "fill"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_full_disk_fails_writes_clearly_and_keeps_serving_reads(mesh, small_disk):
    key = mesh.keygen()
    n = mesh.node("df0", key_file=key, data_dir=os.path.join(small_disk, "df0")).start()
    wait_for(lambda: n.status()["raft"]["state"] == "leader", timeout=TIMEOUT,
             what="the single node to lead")
    r = deploy(n, app("kept"))
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(os.path.join(small_disk, "df0", "raft.reserve")) > 0

    fill(small_disk)
    # raft_uv allocates its open segments (8 MiB each) ahead of the writes: write until those
    # are used up too (about 30 KiB an entry).
    failed = None
    for i in range(1500):
        r = deploy(n, app(f"big{i}", pad=60000))
        if r.returncode != 0:
            failed = r
            break
    assert failed is not None, "every write succeeded on a full disk"
    assert "full" in failed.stderr or "space" in failed.stderr, failed.stderr
    assert n.running(), n.read_log()[-3000:]
    assert "kept" in apps(n), "reads answer from the replica while writes fail"

    # A restart while the disk is still full: it comes up, says why, and serves reads.
    assert n.stop() == 0
    n.start()
    assert "kept" in apps(n)
    assert n.status()["raft"]["disk_full_at_start"] is True
    assert "is full: released the space reserve" in n.read_log()

    # Space again: writes work after a restart.
    os.unlink(os.path.join(small_disk, "fill"))
    assert n.stop() == 0
    n.start()
    wait_for(lambda: n.status()["raft"]["state"] == "leader", timeout=TIMEOUT,
             what="the node to lead again")
    wait_for(lambda: deploy(n, app("after")).returncode == 0, timeout=TIMEOUT,
             what="a write once there is space")
    assert {"kept", "after"} <= apps(n)
    assert n.status()["raft"]["disk_full_at_start"] is False
