#!/usr/bin/env bash
# Installs the peers `agent-supervisor bench launch` compares against: crun and runc (Debian
# packages). unshare and chroot come with util-linux and coreutils. Run as root; idempotent.
# Without them the benchmark still runs and prints "not installed: ..." in their rows.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "bench-prereqs: run as root (apt-get)" >&2
  exit 1
fi

packages=(crun runc util-linux coreutils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bench-prereqs: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
