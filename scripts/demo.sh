#!/usr/bin/env bash
# The main job for a newcomer: installs what is missing, builds, starts a private container
# engine (Podman, in a root of its own under the demo's temp dir, host networking) and a local
# demo mesh of three meshd nodes on loopback (127.0.0.1, ports 17946-17948) that join one mesh
# with a fresh key, deploys a sample application of two microservices and shows them running.
# The nodes run until Ctrl-C; `scripts/demo.sh --once` shows and stops.
#
# Everything lives in a temp dir that is removed at exit; the nodes only talk over loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
once=0
[ "${1:-}" = "--once" ] && once=1

./scripts/install-deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

MESHD=$ROOT/build/meshd/meshd
MESHCTL=$ROOT/build/ctl/meshctl
work=$(mktemp -d /tmp/fogmesh-demo-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$ROOT/scripts/engine.sh" stop "$work/engine" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "starting a private container engine (Podman) in $work/engine"
"$ROOT/scripts/engine.sh" start "$work/engine" >"$work/engine.log" 2>&1 ||
  { echo "demo: the container engine did not start:"; cat "$work/engine.log"; exit 1; }

"$MESHCTL" keygen >"$work/mesh.key"
chmod 600 "$work/mesh.key"

names=(edge-a edge-b edge-c)
for i in 0 1 2; do
  name=${names[$i]}
  port=$((17946 + i))
  args=(--name "$name" --data-dir "$work/$name" --bind "127.0.0.1:$port"
        --key-file "$work/mesh.key" --label "demo=true"
        --engine "unix://$work/engine/podman.sock")
  [ "$i" -gt 0 ] && args+=(--join 127.0.0.1:17946)
  "$MESHD" "${args[@]}" 2>>"$work/$name.log" &
  pids+=($!)
done

ctl() { "$MESHCTL" --socket "$work/$1/api.sock" "${@:2}"; }
for name in "${names[@]}"; do
  for _ in $(seq 100); do ctl "$name" status >/dev/null 2>&1 && break; sleep 0.1; done
  ctl "$name" status >/dev/null || { echo "demo: $name did not start:"; cat "$work/$name.log"; exit 1; }
done

# Wait (bounded) until the last node sees all three alive.
for _ in $(seq 100); do
  [ "$(ctl edge-c members -o json | grep -c '"status": "alive"')" -eq 3 ] && break
  sleep 0.1
done

echo "\$ meshctl --socket $work/edge-c/api.sock members"
ctl edge-c members
echo
echo "\$ meshctl --socket $work/edge-a/api.sock status"
ctl edge-a status
echo

# The desired state lives in Raft: deploy through one node (retrying while the leader is still
# adding the others), read it on another.
echo "\$ meshctl --socket $work/edge-b/api.sock deploy -f examples/sensors.yaml"
for _ in $(seq 100); do ctl edge-b deploy -f examples/sensors.yaml 2>/dev/null && break; sleep 0.1; done
echo
# Bounded wait until every replica runs (the hosting nodes report it).
for _ in $(seq 300); do
  out=$(ctl edge-c get microservices -o json 2>/dev/null) || out=""
  [ -n "$out" ] && ! grep -q '"state": "\(pending\|scheduled\|starting\|stopped\|failed\)"' <<<"$out" &&
    grep -q '"state": "running"' <<<"$out" && break
  sleep 0.1
done
echo "\$ meshctl --socket $work/edge-c/api.sock get microservices"
ctl edge-c get microservices
echo
echo "\$ meshctl --socket $work/edge-c/api.sock get apps"
ctl edge-c get apps
echo
echo "\$ meshctl --socket $work/edge-c/api.sock raft peers"
ctl edge-c raft peers
echo
echo "\$ meshctl --socket $work/edge-a/api.sock get services"
ctl edge-a get services
echo
echo "\$ meshctl --socket $work/edge-a/api.sock routes"
ctl edge-a routes
echo
# The collector prints what it fetched from the reader, through the mesh.
for _ in $(seq 100); do
  ctl edge-a logs sensors/collector --tail 1 2>/dev/null | grep -q "collected .*[0-9]" && break
  sleep 0.1
done
echo "\$ meshctl --socket $work/edge-a/api.sock logs sensors/collector --tail 3"
ctl edge-a logs sensors/collector --tail 3
echo

if [ $once -eq 1 ]; then
  ctl edge-a delete app sensors >/dev/null 2>&1 || true
  exit 0
fi
cat <<EOT
The demo mesh is running. Try, in another terminal:
  export MESH_SOCKET=$work/edge-b/api.sock
  $MESHCTL status -o json
Logs: $work/*.log.  Press Ctrl-C to stop the nodes and remove $work.
EOT
wait
