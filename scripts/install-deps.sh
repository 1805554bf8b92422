#!/usr/bin/env bash
# Installs, from Debian's packages, everything fogmesh needs to build, test and benchmark.
# Installs only what is missing, so a second run is quick. Needs root (or sudo).
set -euo pipefail

pkgs=(
  # build
  build-essential pkg-config meson ninja-build clang clang-format libclang-rt-14-dev
  # libraries
  libevent-dev libuv1-dev libraft-dev libsodium-dev libmsgpack-dev libjansson-dev
  libcurl4-openssl-dev libyaml-dev
  # tests
  libcmocka-dev python3-pytest iproute2 iptables procps
  # tests: private container engines (scripts/engine.sh: Podman, Docker) and the busybox test image
  podman runc busybox-static curl docker.io
  # benchmarks: peers to measure against
  serf etcd-server etcd-client
  # benchmarks: service tunnels (bench/scenarios/tunnel.py) beside a relay and ssh -L
  sockperf iperf3 socat openssh-server openssh-client
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
