"""Security settings of a microservice (issue 16 item 3) reach the real engine and hold inside
the container: the user it runs as, a read-only root filesystem, capabilities, no new
privileges (on by default), devices, tmpfs, ulimits, sysctls and /dev/shm's size.

Real meshd and the private Podman of scripts/test.sh (FOGMESH_ENGINE_SOCKET); the helpers and
the cleanup fixture come from test_runtime. What the container reports about itself is read
from its own output through the engine.
"""

import json
import subprocess

from conftest import MESHCTL, TIMEOUT, wait_for
from test_runtime import (ENGINE, container_logs, containers_of, deploy, pytestmark,  # noqa: F401
                          prefix)

PROBE = ("echo uid=$(id -u) gid=$(id -g); "
         "touch /rootfs-probe 2>/dev/null && echo rootfs=rw || echo rootfs=ro; "
         "echo x > /scratch/f && echo tmpfs=$(stat -c %a /scratch); "
         "echo nofile=$(ulimit -n); "
         "echo shm=$(df -k /dev/shm | tail -1 | awk '{print $2}'); "
         "grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status; "
         "echo shmmax=$(cat /proc/sys/kernel/shmmax); "
         "[ -c /dev/fmnull ] && echo dev=char || echo dev=none; "
         "echo probe-done; sleep 100000")


def app_spec(name):
    locked = {"name": "locked", "image": "localhost/bbox:latest",
              "command": ["/bin/sh", "-c", PROBE],
              "user": "1000:1000", "read_only_rootfs": True,
              "cap_drop": ["ALL"], "cap_add": ["net_bind_service"],
              "tmpfs": [{"path": "/scratch", "size": "8Mi", "mode": "1777"}],
              # nproc too: podman 4.3 drops containers.conf's default_ulimits once a
              # request names any, and its own default nproc is above what this sandbox
              # lets a process raise to (test-environment.md).
              "ulimits": {"nofile": {"soft": 512, "hard": 1024}, "nproc": 4096},
              "shm_size": "16Mi", "sysctls": {"kernel.shmmax": 1048576},
              "devices": [{"host": "/dev/null", "container": "/dev/fmnull"}]}
    loose = {"name": "loose", "image": "localhost/bbox:latest",
             "command": ["/bin/sh", "-c", PROBE.replace("/scratch", "/tmp")],
             "no_new_privileges": False}
    default = {"name": "plain", "image": "localhost/bbox:latest",
               "command": ["/bin/sh", "-c", PROBE.replace("/scratch", "/tmp")]}
    return json.dumps({"kind": "Application", "name": name,
                       "microservices": [locked, loose, default]})


def probe_output(prefix, app, ms):
    for (_, a, m, _), (cid, _) in containers_of(prefix).items():
        if a == app and m == ms:
            out = container_logs(cid)
            return out if "probe-done" in out else None
    return None


def fields(out):
    kv = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            kv[k.strip()] = v.strip()
        elif ":" in line:
            k, v = line.split(":", 1)
            kv[k.strip()] = v.strip()
    return kv


def test_security_settings_hold_in_the_container(mesh, prefix):  # noqa: F811
    (node,) = mesh.start_cluster(1, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    app = f"{prefix}sec"
    wait_for(lambda: deploy(node, app_spec(app)), timeout=TIMEOUT, what="the deploy")
    outs = {}
    for ms in ("locked", "loose", "plain"):
        outs[ms] = wait_for(lambda: probe_output(prefix, app, ms), timeout=TIMEOUT,
                            what=f"{ms}'s probe output")
    locked = fields(outs["locked"])
    assert "uid=1000 gid=1000\n" in outs["locked"], outs["locked"]
    assert locked["rootfs"] == "ro", outs["locked"]
    assert locked["tmpfs"] == "1777", outs["locked"]
    assert locked["nofile"] == "512", outs["locked"]
    assert locked["shm"] == "16384", outs["locked"]
    assert locked["NoNewPrivs"] == "1", outs["locked"]
    # Bounding set: only CAP_NET_BIND_SERVICE (bit 10) is left.
    assert int(locked["CapBnd"], 16) == 1 << 10, outs["locked"]
    assert locked["shmmax"] == "1048576", outs["locked"]
    assert locked["dev"] == "char", outs["locked"]
    loose = fields(outs["loose"])
    assert loose["NoNewPrivs"] == "0", outs["loose"]
    assert loose["rootfs"] == "rw" and "uid=0 gid=0\n" in outs["loose"], outs["loose"]
    plain = fields(outs["plain"])
    assert plain["NoNewPrivs"] == "1", outs["plain"]  # the default
    assert int(plain["CapBnd"], 16) != 1 << 10, outs["plain"]

    # describe shows the settings as stored; a spec with a bad one is refused with its path.
    d = node.ctl_json("describe", "microservice", f"{app}/locked")
    assert d["spec"]["cap_add"] == ["NET_BIND_SERVICE"] and d["spec"]["user"] == "1000:1000"
    bad = json.loads(app_spec(app))
    bad["microservices"][0]["sysctls"] = {"net.ipv4.ip_forward": "1"}
    r = subprocess.run([MESHCTL, "--socket", node.socket, "deploy", "-f", "-"],
                       input=json.dumps(bad), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "microservices[0].sysctls.net.ipv4.ip_forward: not allowed" in r.stderr, r.stderr
