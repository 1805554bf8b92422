"""Raft over the mesh with real meshd processes (issue 4).

Every test starts its own nodes (names with a prefix of the test's own, so that a look at `ps`
tells them apart) and waits by polling with a timeout. Raft views are read with
`meshctl status -o json` (its "raft" object) and `meshctl raft peers -o json`; applications
through meshctl and, where the HTTP answer itself matters (status codes, the `stale` flag,
`?consistent=true`), through the local API socket.

While a test polls, every status it reads is checked for Raft's election safety: two different
nodes never report themselves leader in the same term.
"""

import http.client
import json
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import MESHCTL, TIMEOUT, Fatal, wait_for

# Autopilot promotes a member once it has been alive for 10 s, one change every 250 ms: five
# fresh nodes have five voters after about 11 s. Sanitizer builds and busy CI machines are slower.
FORM_TIMEOUT = max(60.0, 2 * TIMEOUT)
# Voters dead for 30 s are removed, then a standby is promoted.
DEAD_GRACE = 30.0
RAFT_ARGS = ("--raft-voters", "5", "--raft-timing", "lan")

IMAGE = "localhost/bbox:latest"


def app_spec(name, image=IMAGE, **ms):
    """A valid spec with one microservice; ms adds fields to the microservice."""
    return {"kind": "Application", "name": name,
            "microservices": [dict({"name": "reader", "image": image}, **ms)]}


# ---- the local API over its unix socket --------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def api(node, method, path, body=None, timeout=30):
    """(HTTP status, decoded JSON body) of one call to node's API."""
    c = UnixHTTPConnection(node.socket, timeout=timeout)
    try:
        data = None if body is None else json.dumps(body)
        c.request(method, path, body=data,
                  headers={"Content-Type": "application/json"} if data else {})
        r = c.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)
    finally:
        c.close()


# ---- meshctl -----------------------------------------------------------------------------------

def ctl(node, *args, input=None, timeout=30):
    """meshctl on node; returns the CompletedProcess whatever the exit code."""
    return subprocess.run([MESHCTL, "--socket", node.socket, *args], capture_output=True,
                          text=True, input=input, timeout=timeout)


def deploy(node, spec, path=None, fmt="json"):
    """meshctl deploy of spec (a dict, or text as is) from a file (path) or from stdin."""
    if isinstance(spec, dict):
        text = json.dumps(spec) if fmt == "json" else to_yaml(spec)
    else:
        text = spec
    if path is None:
        return ctl(node, "deploy", "-f", "-", input=text)
    with open(path, "w") as f:
        f.write(text)
    return ctl(node, "deploy", "-f", path)


def to_yaml(v, indent=0):
    """Enough YAML for the specs here (maps, lists, strings, numbers, booleans)."""
    pad = "  " * indent
    if isinstance(v, dict):
        out = []
        for k, x in v.items():
            if isinstance(x, (dict, list)) and x:
                out.append(f"{pad}{k}:\n{to_yaml(x, indent + 1)}")
            else:
                out.append(f"{pad}{k}: {scalar(x)}")
        return "\n".join(out)
    if isinstance(v, list):
        out = []
        for x in v:
            body = to_yaml(x, indent + 1) if isinstance(x, (dict, list)) else pad + "  " + scalar(x)
            out.append(f"{pad}- " + body.lstrip())
        return "\n".join(out)
    return pad + scalar(v)


def scalar(x):
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, dict):
        return "{}"
    if isinstance(x, list):
        return "[]"
    return json.dumps(x)


def ok(r, what="meshctl"):
    assert r.returncode == 0, f"{what} failed ({r.returncode}): {r.stderr.strip()}"
    return r.stdout


def local_apps(node):
    """{name: version} from node's own replica (GET /v1/apps), and its stale flag."""
    code, body = api(node, "GET", "/v1/apps")
    assert code == 200, (node.name, code, body)
    return {a["name"]: a["version"] for a in body["apps"]}, body["stale"]


def consistent_apps(node):
    code, body = api(node, "GET", "/v1/apps?consistent=true")
    assert code == 200, (node.name, code, body)
    return {a["name"]: a["version"] for a in body["apps"]}


# ---- Raft views --------------------------------------------------------------------------------

class Safety:
    """Election safety over everything a test reads: at most one leader per term."""

    def __init__(self):
        self.leaders = {}

    def check(self, name, raft):
        if raft and raft.get("state") == "leader":
            prev = self.leaders.setdefault(raft["term"], name)
            if prev != name:
                raise Fatal(f"two leaders in term {raft['term']}: {prev} and {name}")


def raft_of(node, safety=None):
    r = node.status()["raft"]
    if safety:
        safety.check(node.name, r)
    return r


def raft_views(nodes, safety=None):
    return {n.name: raft_of(n, safety) for n in nodes}


def show(vs):
    return "\n".join(f"  {o}: {v.get('state')} term {v.get('term')} leader {v.get('leader')} "
                     f"voters {sorted(v.get('voters') or [])} standbys "
                     f"{sorted(v.get('standbys') or [])} commit {v.get('commit_index')} "
                     f"applied {v.get('applied_index')}"
                     for o, v in sorted(vs.items()))


def wait_raft(nodes, cond, timeout=FORM_TIMEOUT, what="raft to settle", safety=None,
              forbid=None, interval=0.1):
    """Polls every node's raft status until cond(views) holds; returns the views. A node that
    exited, two leaders in one term, or forbid(views) returning a message fail at once."""
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        for n in nodes:
            if not n.running():
                raise AssertionError(f"meshd {n.name} exited ({n.proc.returncode}) while "
                                     f"waiting for {what}:\n{n.read_log()[-3000:]}")
        try:
            last = raft_views(nodes, safety)
            last_exc = None
        except Fatal:
            raise
        except (AssertionError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            last_exc = e
        if last is not None and last_exc is None:
            if forbid:
                msg = forbid(last)
                if msg:
                    raise AssertionError(f"{msg} while waiting for {what}:\n{show(last)}")
            if cond(last):
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n"
                                 + (show(last) if last else "(no views)")
                                 + (f"\nlast error: {last_exc}" if last_exc else ""))
        time.sleep(interval)


def agreed(voters, standbys=()):
    """cond: exactly one node says it leads, every node names it, and every node has exactly
    these voters and standbys (names) in one term."""
    voters, standbys = set(voters), set(standbys)

    def cond(vs):
        leaders = [o for o, v in vs.items() if v["state"] == "leader"]
        if len(leaders) != 1:
            return False
        if any(v["state"] != "follower" for o, v in vs.items() if o != leaders[0]):
            return False
        return all(v["leader"] == leaders[0] and set(v["voters"]) == voters and
                   len(v["voters"]) == len(voters) and set(v["standbys"]) == standbys and
                   v["term"] == vs[leaders[0]]["term"] for v in vs.values())
    return cond


def leader_of(vs):
    (name,) = {v["leader"] for v in vs.values()}
    return name


def start_raft(mesh, n, prefix, voters=5, timeout=FORM_TIMEOUT, safety=None):
    """n nodes (prefix0 bootstraps, the others join it) with --raft-voters voters; returns the
    nodes and the views once all agree on one leader, min(n, voters) voters and the rest
    standbys."""
    nodes = mesh.start_cluster(n, prefix=prefix,
                               args=("--raft-voters", str(voters), "--raft-timing", "lan"))
    names = [x.name for x in nodes]
    t0 = time.monotonic()

    def cond(vs):
        any_v = next(iter(vs.values()))
        nv = min(n, voters)
        return (len(any_v["voters"]) == nv and
                agreed(any_v["voters"], set(names) - set(any_v["voters"]))(vs))
    vs = wait_raft(nodes, cond, timeout=timeout, safety=safety,
                   what=f"{names} to agree on one leader and {min(n, voters)} voters")
    print(f"{prefix}: {n} nodes agreed on leader {leader_of(vs)} and "
          f"{min(n, voters)} voters {time.monotonic() - t0:.1f}s after all joined")
    return nodes, vs


def by_name(nodes):
    return {n.name: n for n in nodes}


def retry_write(node, spec, timeout, what):
    """Deploys spec through node until it succeeds; returns (stdout, seconds, failed attempts)."""
    t0 = time.monotonic()
    errors = []
    while True:
        if not node.running():
            raise AssertionError(f"meshd {node.name} exited while retrying {what}")
        r = deploy(node, spec)
        if r.returncode == 0:
            return r.stdout, time.monotonic() - t0, errors
        errors.append(r.stderr.strip())
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: no success within {timeout}s; last errors:\n"
                                 + "\n".join(errors[-5:]))
        time.sleep(0.05)


# ---- 1. one leader ----------------------------------------------------------------------------

def test_five_nodes_agree_on_one_leader(mesh):
    safety = Safety()
    nodes, vs = start_raft(mesh, 5, "one", safety=safety)
    names = {n.name for n in nodes}
    leader = leader_of(vs)
    assert leader in names
    assert [o for o, v in vs.items() if v["state"] == "leader"] == [leader]
    for o, v in vs.items():
        assert set(v["voters"]) == names and v["standbys"] == [], (o, v)
    # Stable: no new election while nothing fails (a second look a few heartbeats later,
    # polled until every node's commit index has caught up with the leader's of the first).
    term = vs[leader]["term"]
    commit = vs[leader]["commit_index"]
    vs2 = wait_raft(nodes, lambda w: all(v["commit_index"] >= commit for v in w.values()),
                    timeout=TIMEOUT, safety=safety, what="every node to reach the commit index")
    assert {v["leader"] for v in vs2.values()} == {leader}, show(vs2)
    assert {v["term"] for v in vs2.values()} == {term}, show(vs2)


# ---- 2. failover ------------------------------------------------------------------------------

def test_leader_kill9_fails_over_and_follower_takes_writes(mesh):
    safety = Safety()
    nodes, vs = start_raft(mesh, 5, "fo", safety=safety)
    nb = by_name(nodes)
    old = leader_of(vs)
    old_term = vs[old]["term"]
    ok(deploy(nb[old], app_spec("before-failover")), "deploy through the leader")

    rest = [n for n in nodes if n.name != old]
    via = rest[0]  # a follower: the write is forwarded to whoever leads
    t_kill = time.monotonic()
    nb[old].kill9()
    out, _, errors = retry_write(via, app_spec("after-failover"), timeout=FORM_TIMEOUT,
                                 what=f"a deploy through follower {via.name} after the leader "
                                      f"{old} was killed")
    t_write = time.monotonic() - t_kill
    # An attempt that failed may still have committed (its answer was lost with the leader);
    # then the next one finds it there, unchanged, at version 1.
    assert out in ("app after-failover created (version 1)\n",
                   "app after-failover unchanged (version 1)\n"), out
    assert out.endswith("created (version 1)\n") or errors, out
    # The errors meanwhile are consistent: "N of M voters reachable, a majority (K) is needed"
    # only when N < K (gossip still reports the killed leader alive for a second or two).
    for e in errors:
        assert e.startswith("meshctl: meshd answered 5"), e
        m = re.search(r"(\d+) of (\d+) voters reachable, a majority \((\d+)\) is needed", e)
        assert not m or int(m[1]) < int(m[3]), e

    vs = wait_raft(rest, lambda w: (len({v["leader"] for v in w.values()}) == 1 and
                                    next(iter(w.values()))["leader"] not in (None, old)),
                   timeout=FORM_TIMEOUT, safety=safety,
                   what="the four others to agree on a new leader")
    t_leader = time.monotonic() - t_kill
    new = leader_of(vs)
    assert new != old and vs[new]["state"] == "leader" and vs[new]["term"] > old_term, show(vs)
    print(f"failover: kill -9 of leader {old} -> committed write through {via.name} in "
          f"{t_write:.2f}s ({len(errors)} failed attempts"
          + (f", first error: {errors[0]}" if errors else "") + f"); new leader {new} "
          f"(term {old_term} -> {vs[new]['term']}) seen by all four by {t_leader:.2f}s")
    # Generous bound (LAN timing elects in ~1 s; the goal of issue 4 is 1.5 s to a commit).
    assert t_write < 15, t_write
    # Read your writes on the node that took it; the others converge.
    assert local_apps(via)[0] == {"before-failover": 1, "after-failover": 1}
    for n in rest:
        wait_for(lambda: local_apps(n)[0] == {"before-failover": 1, "after-failover": 1},
                 timeout=TIMEOUT, what=f"{n.name} to have both applications")
        assert consistent_apps(n) == {"before-failover": 1, "after-failover": 1}


# ---- 3. deploy semantics ----------------------------------------------------------------------

def test_deploy_update_unchanged_delete_through_different_nodes(mesh):
    safety = Safety()
    nodes, vs = start_raft(mesh, 5, "dep", safety=safety)
    leader = leader_of(vs)
    followers = [n for n in nodes if n.name != leader]
    a, b, c, d = followers
    ld = by_name(nodes)[leader]
    w = mesh.workdir
    v1 = app_spec("sensors")
    v2 = app_spec("sensors", env={"RATE": "5"}, replicas=2)

    # create through a follower, as YAML from a file; the same again through another: unchanged
    assert ok(deploy(a, v1, path=f"{w}/v1.yaml", fmt="yaml")) == \
        "app sensors created (version 1)\n"
    assert local_apps(a)[0] == {"sensors": 1}  # read your writes where the write was made
    assert ok(deploy(b, v1)) == "app sensors unchanged (version 1)\n"  # JSON on stdin
    assert ok(deploy(ld, v1)) == "app sensors unchanged (version 1)\n"  # through the leader
    # update through a third node; through the leader a second app
    assert ok(deploy(c, v2, path=f"{w}/v2.json")) == "app sensors updated to version 2\n"
    assert ok(deploy(c, v2)) == "app sensors unchanged (version 2)\n"
    assert ok(deploy(ld, app_spec("gateway"))) == "app gateway created (version 1)\n"

    # every node converges; get apps -o json and the table agree
    for n in nodes:
        wait_for(lambda: local_apps(n)[0] == {"sensors": 2, "gateway": 1}, timeout=TIMEOUT,
                 what=f"{n.name} to have sensors v2 and gateway v1")
        got = json.loads(ok(ctl(n, "get", "apps", "-o", "json")))
        assert {x["name"]: (x["version"], x["microservices"]) for x in got} == \
            {"sensors": (2, 1), "gateway": (1, 1)}, (n.name, got)
        table = ok(ctl(n, "get", "apps")).splitlines()
        assert table[0].split() == ["NAME", "VERSION", "MICROSERVICES"]
        assert sorted(x.split() for x in table[1:]) == [["gateway", "1", "1"],
                                                        ["sensors", "2", "1"]], table

    # describe (yaml, json) on one node, deploy the output through another: unchanged
    desc_yaml = ok(ctl(d, "describe", "app", "sensors", "-o", "yaml"))
    assert "RATE" in desc_yaml and "replicas: 2" in desc_yaml, desc_yaml
    assert ok(deploy(a, desc_yaml, path=f"{w}/described.yaml")) == \
        "app sensors unchanged (version 2)\n"
    desc_json = ok(ctl(b, "describe", "app", "sensors", "-o", "json"))
    spec = json.loads(desc_json)
    assert spec["name"] == "sensors" and spec["microservices"][0]["env"] == {"RATE": "5"}
    assert spec["microservices"][0]["replicas"] == 2 and spec["microservices"][0]["image"] == IMAGE
    assert ok(deploy(ld, desc_json, path=f"{w}/described.json")) == \
        "app sensors unchanged (version 2)\n"
    assert ok(deploy(c, desc_json)) == "app sensors unchanged (version 2)\n"
    table = ok(ctl(c, "describe", "app", "sensors"))
    assert table.startswith("# app sensors, version 2\n"), table

    # invalid specs: exit 1, every problem with its path, nothing stored
    bad = {"kind": "Application", "name": "broken",
           "microservices": [{"name": "reader", "image": IMAGE,
                              "resources": {"memory": "lots"}},
                             {"name": "writer"}]}
    r = deploy(a, bad)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "microservices[1].image: required (or images)" in r.stderr, r.stderr
    assert "microservices[0].resources.memory: must be a size" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    code, body = api(b, "PUT", "/v1/apps/broken", bad)
    assert code == 400, (code, body)
    assert {p["path"] for p in body["problems"]} == {"microservices[1].image",
                                                     "microservices[0].resources.memory"}, body
    # an invalid update of an existing app leaves it as it was
    bad_update = app_spec("sensors", replicas=-1)
    bad_update["kind"] = "Deployment"
    r = deploy(c, bad_update, path=f"{w}/bad-update.yaml", fmt="yaml")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "kind: must be \"Application\"" in r.stderr, r.stderr
    assert "microservices[0].replicas:" in r.stderr, r.stderr

    # YAML (and JSON) syntax errors: exit 2, FILE:LINE:COLUMN, nothing sent
    broken_yaml = ("kind: Application\nname: broken\nmicroservices:\n"
                   "  - name: reader\n   image: x\n")
    r = deploy(d, broken_yaml, path=f"{w}/broken.yaml")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert re.match(rf"meshctl: {re.escape(w)}/broken.yaml:5:\d+: ", r.stderr), r.stderr
    r = deploy(d, "kind: Application\nname: broken\nmicroservices: [\n")
    assert r.returncode == 2 and re.match(r"meshctl: <stdin>:4:\d+: ", r.stderr), r.stderr
    r = deploy(d, '{"kind": "Application", "name": "broken",\n "microservices": [}\n')
    assert r.returncode == 2 and re.match(r"meshctl: <stdin>:2:\d+: ", r.stderr), r.stderr

    for n in nodes:
        assert consistent_apps(n) == {"sensors": 2, "gateway": 1}, n.name
    assert json.loads(ok(ctl(d, "describe", "app", "sensors", "-o", "json"))) == spec

    # delete through yet another node; deleting again or describing it: exit 1, 404
    assert ok(ctl(d, "delete", "app", "sensors")) == "app sensors deleted\n"
    assert local_apps(d)[0] == {"gateway": 1}
    r = ctl(a, "delete", "app", "sensors")
    assert r.returncode == 1 and "404" in r.stderr and "sensors" in r.stderr, r.stderr
    for n in nodes:
        assert consistent_apps(n) == {"gateway": 1}, n.name
        r = ctl(n, "describe", "app", "sensors")
        assert r.returncode == 1 and "no application 'sensors'" in r.stderr, (n.name, r.stderr)
    # deployed again after the delete: created anew
    out = ok(deploy(b, v1))
    assert re.fullmatch(r"app sensors created \(version \d+\)\n", out), out
    assert ok(deploy(a, v1)) == out.replace("created", "unchanged")


# ---- 4. all killed and restarted ---------------------------------------------------------------

def test_all_five_kill9_and_restart_keep_every_application(mesh):
    safety = Safety()
    nodes, vs = start_raft(mesh, 5, "rst", safety=safety)
    names = {n.name for n in nodes}
    # Writes through every node: five apps, one updated twice, one deleted.
    for i, n in enumerate(nodes):
        ok(deploy(n, app_spec(f"app{i}")))
    ok(deploy(nodes[1], app_spec("app0", replicas=2)))
    ok(deploy(nodes[2], app_spec("app0", replicas=3)))
    ok(ctl(nodes[3], "delete", "app", "app4"))
    want = {"app0": 3, "app1": 1, "app2": 1, "app3": 1}
    for n in nodes:
        assert consistent_apps(n) == want, n.name
    term = max(v["term"] for v in raft_views(nodes, safety).values())

    for n in nodes:
        n.kill9()
    for n in nodes:
        n.join = []  # they find each other through the members they remember
        n.start(wait=False)
    for n in nodes:
        wait_for(n.ready, timeout=TIMEOUT, what=f"{n.name} to answer after the restart")
    t0 = time.monotonic()
    vs = wait_raft(nodes, agreed(names), timeout=FORM_TIMEOUT, safety=safety,
                   what="the restarted five to agree on a leader and five voters")
    print(f"restart: leader {leader_of(vs)} agreed {time.monotonic() - t0:.1f}s after all "
          f"answered; term {term} -> {vs[leader_of(vs)]['term']}")
    assert all(v["term"] > term for v in vs.values()), show(vs)
    for n in nodes:
        wait_for(lambda: local_apps(n) == (want, False), timeout=TIMEOUT,
                 what=f"{n.name}'s replica to hold every application again")
        assert consistent_apps(n) == want, n.name
        desc = json.loads(ok(ctl(n, "describe", "app", "app0", "-o", "json")))
        assert desc["microservices"][0]["replicas"] == 3, desc
    # writes work again, through a follower and through the leader
    follower = next(n for n in nodes if n.name != leader_of(vs))
    assert ok(deploy(follower, app_spec("app1", replicas=2))) == "app app1 updated to version 2\n"
    assert ok(deploy(by_name(nodes)[leader_of(vs)], app_spec("fresh"))) == \
        "app fresh created (version 1)\n"
    for n in nodes:
        assert consistent_apps(n) == dict(want, app1=2, fresh=1), n.name


# ---- 5. minority partition --------------------------------------------------------------------

def test_minority_partition_cannot_write_majority_can_and_all_converge(mesh, lab):
    safety = Safety()
    key = mesh.keygen()
    nodes = []
    for i, ns in enumerate(lab.node_ns):
        join = [] if i == 0 else [nodes[0].addr]
        nodes.append(mesh.node(f"part{i}", host=lab.ip_of(i), netns=ns, key_file=key,
                               join=join, args=RAFT_ARGS).start())
    mesh.wait_all_alive(nodes, what="the nodes in namespaces to join")
    names = [n.name for n in nodes]
    vs = wait_raft(nodes, agreed(names), safety=safety,
                   what="five voters and one leader in the namespaces")
    ok(deploy(nodes[0], app_spec("before")))
    for n in nodes:  # applied everywhere before the cut, so that the minority can read it
        assert consistent_apps(n) == {"before": 1}, n.name

    # The minority holds the current leader and one follower: the leader must step down.
    old = names.index(leader_of(vs))
    minority = [old, (old + 1) % 5]
    majority = [i for i in range(5) if i not in minority]
    mino = [nodes[i] for i in minority]
    majo = [nodes[i] for i in majority]
    maj_names = {n.name for n in majo}
    lab.cut(majority, minority)
    t_cut = time.monotonic()

    # The majority elects a leader of its own.
    vs_maj = wait_raft(majo, lambda w: (len({v["leader"] for v in w.values()}) == 1 and
                                        next(iter(w.values()))["leader"] in maj_names),
                       safety=safety, what="the majority to agree on a leader among itself")
    print(f"partition: majority {sorted(maj_names)} has leader {leader_of(vs_maj)} "
          f"{time.monotonic() - t_cut:.1f}s after the cut")
    # ... and takes writes through a follower.
    via = next(n for n in majo if n.name != leader_of(vs_maj))
    out, _, _ = retry_write(via, app_spec("during"), timeout=FORM_TIMEOUT,
                               what="a deploy on the majority side")
    assert out in ("app during created (version 1)\n", "app during unchanged (version 1)\n")
    assert local_apps(via)[0] == {"before": 1, "during": 1}

    # The minority loses its leader; reads still answer, flagged stale.
    wait_raft(mino, lambda w: all(v["leader"] is None and v["state"] != "leader"
                                  for v in w.values()),
              safety=safety, what="the minority to have no leader")
    for n in mino:
        apps, stale = local_apps(n)
        assert apps == {"before": 1} and stale is True, (n.name, apps, stale)
        code, body = api(n, "GET", "/v1/apps/before")
        assert code == 200 and body["stale"] is True and body["version"] == 1, body
        r = ctl(n, "get", "apps")
        assert r.returncode == 0 and "before" in r.stdout and "stale" in r.stderr, r
        code, body = api(n, "GET", "/v1/apps?consistent=true")
        assert code == 503 and "leader" in body["error"], (code, body)

    # Writes on the minority fail within a few seconds and say how many voters are reachable
    # (once gossip no longer reports the other side alive).
    expect = "2 of 5 voters reachable, a majority (3) is needed"
    for n in mino:
        attempts = []

        def refused():
            t = time.monotonic()
            r = deploy(n, app_spec("minority-write"))
            attempts.append((time.monotonic() - t, r.returncode, r.stderr.strip()))
            assert r.returncode == 1, f"a write on the minority ({n.name}) succeeded: {r}"
            return expect in r.stderr
        wait_for(refused, timeout=FORM_TIMEOUT, interval=0.2,
                 what=f"{n.name} to refuse writes saying '{expect}'")
        slowest = max(a[0] for a in attempts)
        print(f"minority write on {n.name}: {attempts[-1][2]} ({len(attempts)} attempts, "
              f"slowest {slowest:.1f}s)")
        assert slowest < 10, attempts
        code, body = api(n, "GET", "/v1/apps?consistent=true")
        assert code == 503 and expect in body["error"], (code, body)
        code, body = api(n, "DELETE", "/v1/apps/before")
        assert code == 503 and expect in body["error"], (code, body)
        assert local_apps(n)[0] == {"before": 1}

    # Heal: everyone agrees on one leader again and every replica holds the same applications;
    # the write the minority refused is nowhere.
    lab.heal()
    t_heal = time.monotonic()
    want = {"before": 1, "during": 1}

    def converged(w):
        if len({v["leader"] for v in w.values()}) != 1 or None in {v["leader"] for v in w.values()}:
            return False
        return all(local_apps(n) == (want, False) for n in nodes)
    vs = wait_raft(nodes, converged, timeout=FORM_TIMEOUT * 1.5, safety=safety,
                   what="all five to agree on the leader and the applications after healing")
    print(f"healed: leader {leader_of(vs)}, all replicas equal "
          f"{time.monotonic() - t_heal:.1f}s after the heal")
    for n in nodes:
        assert consistent_apps(n) == want, n.name
    ok(deploy(mino[0], app_spec("after-heal")))
    for n in nodes:
        assert consistent_apps(n) == dict(want, **{"after-heal": 1}), n.name


# ---- 6. a standby replaces a dead voter --------------------------------------------------------

@pytest.mark.slow
def test_sixth_node_is_standby_and_replaces_a_dead_voter(mesh):
    safety = Safety()
    nodes, vs = start_raft(mesh, 6, "sb", safety=safety)
    nb = by_name(nodes)
    any_v = next(iter(vs.values()))
    voters0 = set(any_v["voters"])
    (standby,) = any_v["standbys"]
    leader = leader_of(vs)
    peers = json.loads(ok(ctl(nb[standby], "raft", "peers", "-o", "json")))
    roles = {s["name"]: s["role"] for s in peers["servers"]}
    assert roles == dict({v: "voter" for v in voters0}, **{standby: "standby"}), roles
    ok(deploy(nb[standby], app_spec("through-standby")))  # a standby forwards writes too

    victim = sorted(voters0 - {leader})[0]
    survivors = [n for n in nodes if n.name != victim]
    final = (voters0 - {victim}) | {standby}
    nb[victim].kill9()
    t_kill = time.monotonic()
    removed_at = []

    def forbid(w):
        for o, v in w.items():
            vt = set(v["voters"])
            if vt not in (voters0, voters0 - {victim}, final):
                return f"{o} has voters {sorted(vt)}"
            if victim not in vt and victim not in v["standbys"] and not removed_at:
                removed_at.append(time.monotonic() - t_kill)
        return None

    vs = wait_raft(survivors, agreed(final), timeout=DEAD_GRACE + FORM_TIMEOUT, safety=safety,
                   forbid=forbid, interval=0.25,
                   what=f"{standby} to replace the dead voter {victim}")
    took = time.monotonic() - t_kill
    print(f"standby {standby} became a voter {took:.1f}s after kill -9 of voter {victim} "
          f"(removed from the configuration after {removed_at[0]:.1f}s)")
    # The dead voter stays in the configuration for the grace period.
    assert removed_at[0] >= DEAD_GRACE, removed_at
    peers = json.loads(ok(ctl(nb[standby], "raft", "peers", "-o", "json")))
    assert {s["name"]: s["role"] for s in peers["servers"]} == {v: "voter" for v in final}
    ok(deploy(nb[standby], app_spec("after-promotion")))
    for n in survivors:
        assert consistent_apps(n) == {"through-standby": 1, "after-promotion": 1}, n.name


# ---- 7. raft peers and status on every node ---------------------------------------------------

def test_raft_peers_and_status_fields_on_every_node(mesh):
    safety = Safety()
    nodes, vs = start_raft(mesh, 5, "peer", safety=safety)
    names = {n.name for n in nodes}
    addrs = {n.name: n.addr for n in nodes}
    leader = leader_of(vs)
    for i, n in enumerate(nodes):
        ok(deploy(n, app_spec(f"a{i}")))
    code, body = api(by_name(nodes)[leader], "GET", "/v1/apps?consistent=true")
    assert code == 200 and len(body["apps"]) == 5
    commit = raft_of(by_name(nodes)[leader], safety)["commit_index"]

    vs = wait_raft(nodes, lambda w: all(v["applied_index"] >= commit for v in w.values()),
                   timeout=TIMEOUT, safety=safety, what="every node to apply the writes")
    for name, v in vs.items():
        assert set(v) == {"state", "leader", "term", "commit_index", "applied_index", "voters",
                          "standbys", "disk_full_at_start"}, v
        assert v["disk_full_at_start"] is False, v
        assert v["state"] == ("leader" if name == leader else "follower"), (name, v)
        assert v["leader"] == leader and sorted(v["voters"]) == sorted(names), (name, v)
        assert v["standbys"] == [] and v["term"] == vs[leader]["term"], (name, v)
        assert isinstance(v["commit_index"], int) and isinstance(v["applied_index"], int)
        assert commit <= v["applied_index"] <= v["commit_index"], (name, v)

    for n in nodes:
        peers = json.loads(ok(ctl(n, "raft", "peers", "-o", "json")))
        servers = {s["name"]: s for s in peers["servers"]}
        assert set(servers) == names and len(peers["servers"]) == 5, (n.name, peers)
        for name, s in servers.items():
            assert s["address"] == addrs[name], (n.name, s)
            assert s["role"] == "voter" and s["status"] == "alive", (n.name, s)
            assert s["leader"] is (name == leader), (n.name, s)
            assert re.fullmatch(r"[0-9a-f]{16}", s["raft_id"]), s
        assert len({s["raft_id"] for s in servers.values()}) == 5
        assert peers["leader"] == leader and peers["term"] == vs[leader]["term"], peers

        lines = ok(ctl(n, "raft", "peers")).splitlines()
        assert lines[0].split() == ["NAME", "ADDRESS", "ROLE", "STATUS", "LEADER"], lines
        rows = {r.split()[0]: r.split()[1:] for r in lines[1:6]}
        assert rows == {name: [addrs[name], "voter", "alive"] + (["*"] if name == leader else [])
                        for name in names}, lines
        assert re.fullmatch(rf"term {vs[leader]['term']}, commit index \d+", lines[6]), lines
        assert len(lines) == 7, lines

        text = ok(ctl(n, "status"))
        state = "leader" if n.name == leader else "follower"
        assert re.search(rf"^Raft: +{state}, leader {re.escape(leader)}, term "
                         rf"{vs[leader]['term']}, 5 voters, 0 standbys$", text, re.M), text
