#!/usr/bin/env bash
# Installs what agent-supervisor and its tests need on a fresh Debian machine (run as root).
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "install-prereqs: run as root (apt-get, and the tests need namespaces and cgroups)" >&2
  exit 1
fi

packages=(python3 redis-server redis-tools iproute2 nftables wireguard-tools wireguard-go tcpdump iperf3 curl chromium openssh-server openssh-client systemd procps util-linux kmod zstd prometheus crun runc skopeo umoci supervisor debootstrap buildah strace)
# The run-step test pip-installs a requirement inside an image (offline, from a wheel).
packages+=(python3-pip python3-setuptools python3-wheel python3-distutils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-prereqs: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# `export kubernetes` is checked offline against the Kubernetes schemas this package ships
# (supervisor/tests/export.rs, export/tests/kube.rs).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "install-prereqs: installing kubernetes-validate (pip)"
  python3 -m pip install --break-system-packages --quiet kubernetes-validate==1.37.0
fi

# The example system runs its own Redis on 6379: Debian's redis-server service must not hold it.
if systemctl is-active --quiet redis-server 2>/dev/null; then
  echo "install-prereqs: stopping and disabling Debian's redis-server service (the example runs its own Redis on 6379)"
  systemctl disable --now redis-server >/dev/null 2>&1 || true
elif pgrep -x redis-server >/dev/null 2>&1 && [[ -x /etc/init.d/redis-server ]]; then
  /etc/init.d/redis-server stop >/dev/null 2>&1 || true
fi

# Only promtool is needed (the metrics test runs `promtool check metrics`): Debian's prometheus
# service must not run (it would listen on 9090 and scrape nothing useful).
if systemctl is-active --quiet prometheus 2>/dev/null || systemctl is-enabled --quiet prometheus 2>/dev/null; then
  echo "install-prereqs: stopping and disabling Debian's prometheus service (only promtool is used)"
  systemctl disable --now prometheus >/dev/null 2>&1 || true
elif pgrep -x prometheus >/dev/null 2>&1 && [[ -x /etc/init.d/prometheus ]]; then
  /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

# supervisord is only a peer of `agent-bench supervise`, which runs its own instance:
# Debian's supervisor service must not run.
if systemctl is-active --quiet supervisor 2>/dev/null || systemctl is-enabled --quiet supervisor 2>/dev/null; then
  echo "install-prereqs: stopping and disabling Debian's supervisor service (agent-bench supervise runs its own supervisord)"
  systemctl disable --now supervisor >/dev/null 2>&1 || true
elif pgrep -x supervisord >/dev/null 2>&1 && [[ -x /etc/init.d/supervisor ]]; then
  /etc/init.d/supervisor stop >/dev/null 2>&1 || true
fi

# The VM used by the cgroup v2 tests: QEMU, busybox and a cached Debian cloud kernel.
if [[ -x .ci/vm-prereqs.sh ]]; then
  .ci/vm-prereqs.sh
fi
