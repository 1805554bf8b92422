"""A consumer microservice reaches a provider microservice on another node by its service
name (issue 6), with the private container engine of scripts/test.sh (FOGMESH_ENGINE_SOCKET).

The provider `expose`s a service; the consumer `connect`s to it and finds it on 127.0.0.1 of
its own node (host networking), where meshd listens and tunnels each connection to the node
that runs the provider.
"""

import json
import subprocess

from conftest import MESHCTL, TIMEOUT, free_port, wait_for
from test_runtime import ENGINE, containers_of, deploy, pytestmark, prefix  # noqa: F401


def test_consumer_reaches_provider_by_service_name(mesh, prefix):  # noqa: F811
    nodes = mesh.start_cluster(3, prefix=prefix, args=["--engine", f"unix://{ENGINE}"])
    wait_for(lambda: all(n["engine"] == "available" for n in nodes[0].ctl_json("get", "nodes")),
             timeout=TIMEOUT, what="every node to report its engine")
    pport, cport = free_port(), free_port()
    service = f"web-{prefix}"
    app = f"{prefix}shop"
    spec = {"kind": "Application", "name": app, "microservices": [
        {"name": "provider", "image": "localhost/bbox:latest",
         "placement": {"node": nodes[0].name},
         "command": ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-provider > "
                     f"/www/index.html && exec httpd -f -p 127.0.0.1:{pport} -h /www"],
         "expose": [{"name": service, "port": pport}]},
        {"name": "consumer", "image": "localhost/bbox:latest",
         "placement": {"node": nodes[2].name},
         "command": ["/bin/sh", "-c", "while true; do wget -q -O - "
                     f"http://127.0.0.1:{cport}/ 2>&1; sleep 0.5; done"],
         "connect": [{"service": service, "port": cport}]}]}
    wait_for(lambda: deploy(nodes[1], json.dumps(spec)), timeout=TIMEOUT, what="the deploy")
    svc = wait_for(lambda: {s["name"]: s for s in nodes[1].ctl_json("get", "services")}
                   .get(service), timeout=TIMEOUT, what="the service to be listed")
    assert svc["endpoints"][0]["node"] == nodes[0].name
    assert svc["listeners"][0]["node"] == nodes[2].name

    def consumer_got_it():
        r = subprocess.run([MESHCTL, "--socket", nodes[1].socket, "logs", f"{app}/consumer",
                            "--tail", "5"], capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and "hello-from-provider" in r.stdout
    wait_for(consumer_got_it, timeout=TIMEOUT * 2,
             what="the consumer's output to show the provider's page")
    # It went through the mesh: a tunnel from the consumer's node to the provider's.
    st = nodes[2].status()["tunnels"]
    assert st["opened"] >= 1, st
    nodes[0].ctl("delete", "app", app)
    wait_for(lambda: not any(k[1] == app for k in containers_of(prefix)), timeout=TIMEOUT,
             what="the containers to be removed")
