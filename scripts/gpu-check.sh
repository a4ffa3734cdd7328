#!/usr/bin/env bash
# GPU passthrough on a machine with an NVIDIA GPU and driver: runs a group with `gpus: 1` from
# the built binaries and checks inside the group that
#   1. `nvidia-smi -L` lists exactly the granted GPU,
#   2. another GPU's node (where the machine has two or more) cannot be opened: EPERM,
#   3. a device that was not granted (a disk's node, made inside the group) cannot be opened,
#   4. with a CUDA-capable Python (torch or cupy), a small computation runs on the GPU.
# Prints a pass/fail table; exit status 0 when every check that could run passed.
#
# Usage: scripts/gpu-check.sh [DIR_WITH_BINARIES]   (default: target/release, else target/debug)
# Run as root. CI has no GPU: supervisor/tests/gpu.rs is the CI side (fake GPUs, CDI spec).
set -u
BIN=${1:-}
if [ -z "$BIN" ]; then
  for d in target/release target/debug; do
    [ -x "$d/agent-supervisor" ] && BIN=$d && break
  done
fi
AS=$BIN/agent-supervisor
[ -x "$AS" ] || { echo "gpu-check: no agent-supervisor binary in ${BIN:-target/}" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "gpu-check: run as root (namespaces, cgroups)" >&2; exit 2; }
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found: no NVIDIA driver here" >&2; exit 2; }

W=$(mktemp -d /tmp/as-gpu-check.XXXXXX)
trap 'rm -rf "$W"' EXIT
NGPU=$(nvidia-smi -L | grep -c '^GPU ')
UUID0=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0 | tr -d ' ')
PY=$(command -v python3)
cat > "$W/probe.py" <<'EOF'
import errno, os, stat, subprocess, sys
def try_open(p):
    try:
        os.close(os.open(p, os.O_RDWR)); return "OK"
    except OSError as e:
        return errno.errorcode[e.errno]
print("SMI", subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip().replace("\n", " | "))
for p in sorted(os.listdir("/dev")):
    if p.startswith("nvidia") and p[6:].isdigit():
        print("NODE", "/dev/" + p, try_open("/dev/" + p))
mine = {int(p[6:]) for p in os.listdir("/dev") if p.startswith("nvidia") and p[6:].isdigit()}
others = [int(m) for m in os.environ.get("ALL_GPU_MINORS", "").split() if int(m) not in mine]
if others:
    try:
        os.mknod("/dev/other-gpu", 0o600 | stat.S_IFCHR, os.makedev(195, others[0]))
        print("OTHER", try_open("/dev/other-gpu"))
    except OSError as e:
        print("OTHER mknod", errno.errorcode[e.errno])
try:
    os.mknod("/dev/disk0", 0o600 | stat.S_IFBLK, os.makedev(8, 0))
    print("DISK", try_open("/dev/disk0"))
except OSError as e:
    print("DISK mknod", errno.errorcode[e.errno])
print("VISIBLE", os.environ.get("NVIDIA_VISIBLE_DEVICES"), os.environ.get("CUDA_VISIBLE_DEVICES"))
try:
    import torch
    x = torch.ones(1024, device="cuda")
    print("CUDA", "torch", float((x * 2).sum()))
except ImportError:
    try:
        import cupy
        print("CUDA", "cupy", float((cupy.ones(1024) * 2).sum()))
    except ImportError:
        print("CUDA absent")
except Exception as e:
    print("CUDA error", e)
EOF
# Every GPU's minor: the group must not open any but its own.
MINORS=$(grep -h 'Device Minor' /proc/driver/nvidia/gpus/*/information 2>/dev/null | awk '{print $3}' | tr '\n' ' ')
cat > "$W/system.yaml" <<EOF
hosts:
  gpuhost: {address: 127.0.0.1, role: primary}
daemon:
  run_dir: $W/run
  log_dir: $W/logs
  state_dir: $W/state
  control_socket: $W/control.sock
  cgroup_root: as-gpu-check.slice
  http_listen: 127.0.0.1:19990
groups:
  gpu-infra:
    host: gpuhost
    gpus: 1
    security: {cap_add: [MKNOD]}
    agents:
      - name: gpu-probe
        command: [$PY, $W/probe.py]
        env: {ALL_GPU_MINORS: "$MINORS"}
EOF
echo "== check"; "$AS" check --host gpuhost "$W/system.yaml" 2>&1 | tail -5
echo "== run-group"
OUT=$("$AS" run-group "$W/system.yaml" --host gpuhost gpu-infra --until-exit 2>&1)
echo "$OUT"
rmdir /sys/fs/cgroup/*/as-gpu-check.slice /sys/fs/cgroup/as-gpu-check.slice 2>/dev/null

fail=0
row() { printf '| %-52s | %-6s | %s\n' "$1" "$2" "$3"; [ "$2" = FAIL ] && fail=1; }
echo
printf '| %-52s | %-6s | %s\n' check result detail
SMI=$(echo "$OUT" | sed -n 's/^SMI //p')
n=$(echo "$SMI" | grep -o 'GPU [0-9]*:' | wc -l)
if [ "$n" = 1 ] && echo "$SMI" | grep -q "$UUID0"; then row "nvidia-smi -L lists exactly the granted GPU" PASS "$SMI"
else row "nvidia-smi -L lists exactly the granted GPU" FAIL "$SMI (want 1 GPU, $UUID0)"; fi
if [ "$NGPU" -ge 2 ]; then
  o=$(echo "$OUT" | sed -n 's/^OTHER //p')
  [ "$o" = EPERM ] && row "another GPU's node cannot be opened" PASS "$o" || row "another GPU's node cannot be opened" FAIL "$o"
else row "another GPU's node cannot be opened" SKIP "one GPU on this machine"; fi
dsk=$(echo "$OUT" | sed -n 's/^DISK //p')
[ "$dsk" = EPERM ] && row "a node not granted (disk) cannot be opened" PASS "$dsk" || row "a node not granted (disk) cannot be opened" FAIL "$dsk"
cu=$(echo "$OUT" | sed -n 's/^CUDA //p')
case "$cu" in
  absent) row "a CUDA computation runs" SKIP "no torch or cupy for $PY" ;;
  torch*2048.0|cupy*2048.0) row "a CUDA computation runs" PASS "$cu" ;;
  *) row "a CUDA computation runs" FAIL "$cu" ;;
esac
exit $fail
