#!/usr/bin/env bash
# Starts or stops a private container engine that serves the Docker Engine API v1.41 on a unix
# socket, for the tests: Podman (`podman system service`, the default) or Docker (`dockerd`).
#
#   scripts/engine.sh [--kind podman|docker] start DIR [NETNS]
#                                         prints the socket path (DIR/podman.sock or
#                                         DIR/docker.sock) when ready
#   scripts/engine.sh stop DIR            stops the service (whichever kind DIR holds), removes
#                                         its containers, unmounts, removes DIR
#
# The kind may also come from FOGMESH_ENGINE_KIND (--kind wins). Both kinds import the same
# test image, localhost/bbox:latest (below), so a test runs unchanged against either.
#
# Podman. Everything lives under DIR: containers.conf, storage.conf, graphroot, runroot, the
# service's pid and log. The machine's own /etc/containers is untouched (CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF point at private files). The settings come from
# ../shared/notes/test-environment.md: default_ulimits (root lacks CAP_SYS_RESOURCE, hard
# nofile 20000), cgroupfs (systemd is not PID 1), events in a file, k8s-file logs, runc.
# Networking: without NETNS, bridge networking is made impossible (the CNI plugin directory is
# an empty one under DIR), because the Docker-compatible API defaults to a bridge when a create
# body has no HostConfig.NetworkMode (containers.conf's netns = "host" only applies to the
# podman CLI), and the bridge would create cni-podman0 and iptables rules in the host's
# namespace. Callers must ask for "NetworkMode": "host" (or "none"); a bridge create fails with a
# clear error instead of touching the host. With NETNS (a name in /run/netns made by the test),
# the service runs inside that namespace (nsenter --net, not `ip netns exec`), and bridges,
# ports and their iptables rules stay in there.
#
# Outside DIR, podman still writes its blob-info cache to /var/lib/containers/cache (root's
# default; containers.conf has no setting for it), runc keeps /run/runc (empty after), and with
# NETNS the CNI host-local IPAM keeps its leases in /var/lib/cni/networks/podman.
#
# Storage driver: vfs. overlay works too but leaves mounts under DIR when the service dies with
# containers still around; vfs has no mounts to leak and the test image is a few MB. `stop`
# still unmounts anything left under DIR before removing it (containers' shm mounts).
#
# Docker (Debian docker.io 20.10). dockerd runs with its own config file (DIR/daemon.json, so
# /etc/docker/daemon.json is not read), --data-root, --exec-root (its containerd, started by
# dockerd, keeps its state and socket in there), --pidfile and -H unix://DIR/docker.sock; the
# identity key that dockerd 20.10 writes to /etc/docker/key.json goes to DIR instead
# (deprecated-key-path). cgroupfs driver. Storage: overlay2, else vfs when the kernel or the
# filesystem under DIR refuses overlay2. Networking: --bridge=none, --iptables=false,
# --ip-masq=false, --ip-forward=false: no docker0, no iptables rules, no sysctl changes; host
# (or none) networking only, and a bridge create fails (network "bridge" not found). With NETNS,
# dockerd runs in that namespace with its default bridge and iptables, as Podman does.
# Outside DIR, dockerd makes /run/docker/plugins (empty; its plugin directory is fixed), which
# `stop` removes when it is empty and no other dockerd runs.
#
# `start` also imports localhost/bbox:latest: a rootfs of Debian's busybox-static (/bin/busybox
# and the symlinks of `busybox --list`), imported through the API so no registry is needed.
set -euo pipefail

die() { echo "engine.sh: $*" >&2; exit 1; }

usage="usage: engine.sh [--kind podman|docker] start DIR [NETNS] | stop DIR"
kind=${FOGMESH_ENGINE_KIND:-podman}
if [ "${1:-}" = --kind ]; then
  kind=${2:-}
  shift 2 || die "$usage"
fi
case "$kind" in podman | docker) ;; *) die "--kind $kind: expected podman or docker" ;; esac
cmd=${1:-}
dir=${2:-}
netns=${3:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "$usage"

env_for() { # dir
  export CONTAINERS_CONF=$1/containers.conf
  export CONTAINERS_STORAGE_CONF=$1/storage.conf
  export CONTAINERS_REGISTRIES_CONF=$1/registries.conf
  export XDG_RUNTIME_DIR=$1/xdg
  export XDG_CONFIG_HOME=$1/xdg-config
  export XDG_DATA_HOME=$1/xdg-data
}

unmount_under() { # dir: unmount every mount point below dir, deepest first
  local d
  d=$(realpath -m "$1")
  awk -v d="$d/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

start_podman() {
  command -v podman >/dev/null || die "podman is not installed (scripts/install-deps.sh)"
  command -v busybox >/dev/null || [ -x /bin/busybox ] || die "busybox-static is not installed"
  mkdir -p "$dir"
  dir=$(realpath "$dir")
  local sock=$dir/podman.sock
  [ -e "$dir/podman.pid" ] && kill -0 "$(cat "$dir/podman.pid")" 2>/dev/null &&
    die "a service already runs for $dir"
  mkdir -p "$dir/graph" "$dir/run" "$dir/tmp" "$dir/xdg" "$dir/xdg-config" "$dir/xdg-data"
  chmod 700 "$dir/xdg"
  local net_conf
  if [ -n "$netns" ]; then
    [ -e "/run/netns/$netns" ] || die "no network namespace /run/netns/$netns"
    net_conf='network_backend = "cni"'
  else
    mkdir -p "$dir/no-cni-plugins"
    net_conf="network_backend = \"cni\"
cni_plugin_dirs = [\"$dir/no-cni-plugins\"]"
  fi
  cat >"$dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
netns = "host"
# no /etc/hosts or resolv.conf games with the host's files
base_hosts_file = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
runtime = "runc"
tmp_dir = "$dir/tmp"
static_dir = "$dir/graph/libpod"
volume_path = "$dir/graph/volumes"
infra_image = "localhost/bbox:latest"

[network]
network_config_dir = "$dir/net"
$net_conf
EOF
  cat >"$dir/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$dir/graph"
runroot = "$dir/run"
EOF
  cat >"$dir/registries.conf" <<EOF
unqualified-search-registries = []
short-name-mode = "disabled"
EOF
  env_for "$dir"
  rm -f "$sock"
  # setsid: the service outlives this script and is not in the caller's process group.
  local wrap=()
  [ -n "$netns" ] && wrap=(nsenter "--net=/run/netns/$netns")
  setsid "${wrap[@]}" podman --log-level=warn system service --time=0 "unix://$sock" \
    >"$dir/podman.log" 2>&1 </dev/null &
  echo $! >"$dir/podman.pid"
  local i
  for i in $(seq 1 200); do
    [ -S "$sock" ] && curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
    kill -0 "$(cat "$dir/podman.pid")" 2>/dev/null || { cat "$dir/podman.log" >&2; die "podman exited"; }
    sleep 0.05
  done
  curl -sf --unix-socket "$sock" http://d/_ping >/dev/null || {
    cat "$dir/podman.log" >&2; die "podman did not answer on $sock"; }
  import_image "$sock"
  echo "$sock"
}

# Waits for dockerd (pid in DIR/docker.pid) to answer on sock; returns 1 when it exited.
docker_wait() { # sock
  local i
  for i in $(seq 1 300); do
    [ -S "$1" ] && curl -sf --unix-socket "$1" http://d/_ping >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$dir/docker.pid" 2>/dev/null || echo 0)" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

start_docker() {
  command -v dockerd >/dev/null || die "dockerd is not installed (scripts/install-deps.sh)"
  command -v busybox >/dev/null || [ -x /bin/busybox ] || die "busybox-static is not installed"
  mkdir -p "$dir"
  dir=$(realpath "$dir")
  local sock=$dir/docker.sock
  [ -e "$dir/docker.pid" ] && kill -0 "$(cat "$dir/docker.pid")" 2>/dev/null &&
    die "a service already runs for $dir"
  mkdir -p "$dir/data" "$dir/exec" "$dir/tmp"
  printf '{"deprecated-key-path": "%s/key.json"}\n' "$dir" >"$dir/daemon.json"
  local net=(--bridge=none --iptables=false --ip-masq=false --ip-forward=false
    --userland-proxy=false)
  local wrap=()
  if [ -n "$netns" ]; then
    [ -e "/run/netns/$netns" ] || die "no network namespace /run/netns/$netns"
    wrap=(nsenter "--net=/run/netns/$netns")
    net=()
  fi
  local driver
  for driver in overlay2 vfs; do
    rm -f "$sock"
    # setsid: the daemon outlives this script and is not in the caller's process group.
    # nsenter and setsid exec, so $! is dockerd itself.
    setsid "${wrap[@]}" dockerd --config-file "$dir/daemon.json" --data-root "$dir/data" \
      --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" -H "unix://$sock" \
      --storage-driver "$driver" --exec-opt native.cgroupdriver=cgroupfs "${net[@]}" \
      >"$dir/docker.log" 2>&1 </dev/null &
    echo $! >"$dir/docker.pid"
    docker_wait "$sock" && break
    [ "$driver" = vfs ] && { cat "$dir/docker.log" >&2; die "dockerd did not answer on $sock"; }
    # overlay2 refused (or a slow start): stop this one and try vfs.
    stop_docker_daemon
    unmount_under "$dir"
    rm -rf "$dir/data" "$dir/exec"
    mv "$dir/docker.log" "$dir/docker-overlay2.log"
  done
  import_image "$sock"
  echo "$sock"
}

# The test image: busybox-static as a rootfs tar, imported through the API of sock.
import_image() { # sock
  local sock=$1
  local bb rootfs=$dir/tmp/bbox-rootfs
  bb=$(command -v busybox || echo /bin/busybox)
  rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" \
    "$rootfs/sys" "$rootfs/dev" "$rootfs/www"
  cp "$bb" "$rootfs/bin/busybox"
  local app
  for app in $("$bb" --list); do
    [ "$app" = busybox ] || ln -sf busybox "$rootfs/bin/$app"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  tar -C "$rootfs" -cf "$dir/tmp/bbox.tar" .
  rm -rf "$rootfs"
  curl -sf --unix-socket "$sock" -X POST -H 'Content-Type: application/x-tar' \
    --data-binary @"$dir/tmp/bbox.tar" \
    'http://d/v1.41/images/create?fromSrc=-&repo=localhost/bbox%3Alatest&tag=latest&changes=CMD%20%5B%22%2Fbin%2Fsh%22%5D' \
    >"$dir/import.log" ||
    { cat "$dir/import.log" >&2; die "importing localhost/bbox:latest failed"; }
  curl -sf --unix-socket "$sock" http://d/v1.41/images/localhost/bbox:latest/json >/dev/null ||
    { cat "$dir/import.log" >&2; die "localhost/bbox:latest is missing after the import"; }
}

# Kills and removes every container of the engine at sock (a failed test left them).
remove_all_containers() { # sock
  [ -S "$1" ] || return 0
  curl -s --max-time 10 --unix-socket "$1" 'http://d/v1.41/containers/json?all=true' |
    grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4 | while read -r id; do
    curl -s --max-time 10 --unix-socket "$1" -X POST \
      "http://d/v1.41/containers/$id/kill?signal=KILL" >/dev/null || true
    curl -s --max-time 10 --unix-socket "$1" -X DELETE \
      "http://d/v1.41/containers/$id?force=true" >/dev/null || true
  done || true
}

# Stops the dockerd of DIR (TERM, then KILL) and whatever it left running: its containerd and
# the shims of containers, found by DIR in their command lines.
stop_docker_daemon() {
  local pid="" i p
  [ -f "$dir/docker.pid" ] && pid=$(cat "$dir/docker.pid")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  for p in $(pgrep -f -- "containerd.*$dir/" 2>/dev/null || true); do
    [ "$p" != $$ ] && kill -KILL "$p" 2>/dev/null || true
  done
  rm -f "$dir/docker.pid"
}

stop_docker() {
  remove_all_containers "$dir/docker.sock"
  stop_docker_daemon
  unmount_under "$dir"
  rm -rf "$dir"
  # dockerd's fixed plugin directory, if it is empty and no other dockerd runs.
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    rmdir /run/docker/plugins /run/docker 2>/dev/null || true
  fi
}

stop() {
  [ -d "$dir" ] || return 0
  dir=$(realpath "$dir")
  if [ -e "$dir/daemon.json" ]; then
    stop_docker
    return
  fi
  env_for "$dir"
  local pid=""
  [ -f "$dir/podman.pid" ] && pid=$(cat "$dir/podman.pid")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Containers still there (a failed test): remove them while the service is up, so conmon
    # and the container processes go too.
    remove_all_containers "$dir/podman.sock"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # conmon processes of containers that survived (their command line names our DIR).
  local p
  for p in $(pgrep -f -- "conmon .*$dir/" 2>/dev/null || true); do
    [ "$p" != $$ ] && kill -KILL "$p" 2>/dev/null || true
  done
  unmount_under "$dir"
  rm -rf "$dir"
}

case "$cmd" in
start) "start_$kind" ;;
stop) stop ;;
*) die "$usage" ;;
esac
