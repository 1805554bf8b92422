"""Several hosts on one machine for the integration tests: a bridge namespace and n node
namespaces, every name carrying this process's pid so that parallel runs do not clash, all
deleted at teardown whatever happened. Partitions are iptables DROP rules inside the node
namespaces, never in the machine's own namespace. The `lab` fixture (conftest.py) hands one
to a test."""

import os
import shutil
import signal
import subprocess
import time

import pytest

SUBNET = "10.231.0"


def sh(*cmd, check=True):
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


class Lab:
    """A bridge namespace and n node namespaces, node i at SUBNET.(i+1)."""

    def __init__(self, n):
        self.tag = f"fmit{os.getpid()}"
        self.bridge_ns = f"{self.tag}-br"
        self.node_ns = [f"{self.tag}-n{i}" for i in range(n)]
        self.created = []

    def ip_of(self, i):
        return f"{SUBNET}.{i + 1}"

    def add_ns(self, name):
        sh("ip", "netns", "add", name)
        self.created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def setup(self):
        self.add_ns(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        for i, ns in enumerate(self.node_ns):
            self.add_ns(ns)
            # Both ends are made inside our namespaces: the machine's own is never touched.
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
               "netns", self.bridge_ns)
            sh("ip", "-n", ns, "addr", "add", f"{self.ip_of(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", self.bridge_ns, "link", "set", f"p{i}", "master", "br0")
            sh("ip", "-n", self.bridge_ns, "link", "set", f"p{i}", "up")

    def iptables(self, i, *args):
        sh("ip", "netns", "exec", self.node_ns[i], "iptables", "-w", *args)

    def cut(self, group_a, group_b):
        """Drops all traffic between the two groups (rules on both sides)."""
        for side, other in ((group_a, group_b), (group_b, group_a)):
            for i in side:
                for j in other:
                    self.iptables(i, "-A", "INPUT", "-s", self.ip_of(j), "-j", "DROP")
                    self.iptables(i, "-A", "OUTPUT", "-d", self.ip_of(j), "-j", "DROP")

    def heal(self):
        for i in range(len(self.node_ns)):
            self.iptables(i, "-F", "INPUT")
            self.iptables(i, "-F", "OUTPUT")

    def teardown(self):
        errors = []
        for ns in reversed(self.created):
            r = sh("ip", "netns", "del", ns, check=False)
            if r.returncode != 0:
                errors.append(f"{ns}: {r.stderr.strip()}")
        self.created = []
        left = [ns for ns in sh("ip", "netns", "list").stdout.split()
                if ns.startswith(self.tag + "-")]
        return errors + [f"namespace {ns} still exists" for ns in left]


def lab_available():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip") or not shutil.which("iptables"):
        return "needs ip (iproute2) and iptables"
    probe = f"fmit{os.getpid()}-probe"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns unavailable: {r.stderr.strip()}"
    try:
        r = sh("ip", "netns", "exec", probe, "iptables", "-w", "-L", "INPUT", check=False)
        if r.returncode != 0:
            return f"iptables unusable inside a namespace: {r.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None
