#!/usr/bin/env bash
# Starts or stops a private Podman API service (Docker Engine API v1.41) for the tests.
#
#   scripts/engine.sh start DIR [NETNS]  prints the socket path (DIR/podman.sock) when ready
#   scripts/engine.sh stop DIR            stops the service, removes its containers, unmounts,
#                                         removes DIR
#
# Everything lives under DIR: containers.conf, storage.conf, graphroot, runroot, the service's
# pid and log. The machine's own /etc/containers is untouched (CONTAINERS_CONF and
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
# `start` also imports localhost/bbox:latest: a rootfs of Debian's busybox-static (/bin/busybox
# and the symlinks of `busybox --list`), imported through the API so no registry is needed.
set -euo pipefail

die() { echo "engine.sh: $*" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
netns=${3:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: engine.sh start DIR [NETNS] | stop DIR"

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

start() {
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

  # The test image: busybox-static as a rootfs tar, imported through the API.
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
  echo "$sock"
}

stop() {
  [ -d "$dir" ] || return 0
  dir=$(realpath "$dir")
  env_for "$dir"
  local pid=""
  [ -f "$dir/podman.pid" ] && pid=$(cat "$dir/podman.pid")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Containers still there (a failed test): remove them while the service is up, so conmon
    # and the container processes go too.
    if [ -S "$dir/podman.sock" ]; then
      curl -s --max-time 10 --unix-socket "$dir/podman.sock" \
        'http://d/v1.41/containers/json?all=true' |
        grep -o '"Id":"[0-9a-f]*"' | cut -d'"' -f4 | while read -r id; do
        curl -s --max-time 10 --unix-socket "$dir/podman.sock" -X POST \
          "http://d/v1.41/containers/$id/kill?signal=KILL" >/dev/null || true
        curl -s --max-time 10 --unix-socket "$dir/podman.sock" -X DELETE \
          "http://d/v1.41/containers/$id?force=true" >/dev/null || true
      done || true
    fi
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
start) start ;;
stop) stop ;;
*) die "usage: engine.sh start|stop DIR" ;;
esac
