#!/bin/sh
# Prerequisites of the VM tests (tests/src/vm.rs): installs the Debian packages they need
# and fetches the guest kernel into the harness cache, so the tests themselves download
# nothing. Idempotent: installed packages and a cached kernel are left as they are.
#
# Packages: qemu-system-x86 (TCG guest, 9p), busybox-static (the initramfs), kmod
# (depmod), cpio (the initramfs archive), xz-utils (uncompressed vmlinux for a faster boot).
# Cache: $AGENT_SUPERVISOR_VM_CACHE, default /var/cache/agent-supervisor-tests/vm.
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${AGENT_SUPERVISOR_VM_CACHE:-/var/cache/agent-supervisor-tests/vm}
packages="qemu-system-x86 busybox-static kmod cpio xz-utils"

missing=
for p in $packages; do
    status=$(dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "vm-prereqs: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -qq --no-install-recommends $missing
fi

kernel=$(sh "$repo/tests/vm/fetch-kernel.sh" "$cache")
echo "vm-prereqs: kernel $(cat "$kernel/complete") in $kernel"
