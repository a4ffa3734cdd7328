#!/bin/sh
# Fetches Debian's kernel for the test VM into the harness cache and prepares it.
#
# Usage: fetch-kernel.sh CACHE_DIR
#
# Resolves the kernel package behind the meta-package (default linux-image-amd64;
# override with AGENT_SUPERVISOR_VM_KERNEL_META), downloads it with `apt-get download`,
# unpacks it with `dpkg -x` and runs `depmod -b` on the unpack. The result lands in
# CACHE_DIR/kernel/PACKAGE_VERSION/ with:
#   root/       the unpacked package (boot/vmlinuz-*, lib/modules/RELEASE/...)
#   release     the module release (uname -r inside the VM)
#   vmlinux     the uncompressed kernel (when xz can extract it): QEMU boots it through
#               its PVH entry point, about 2 s faster under TCG than the bzImage, which
#               the guest would decompress itself
#   complete    written last; a directory without it is ignored
# The directory is built under a temporary name and renamed into place, so
# concurrent runs never see a half-built kernel. Idempotent: a kernel already in
# the cache is not fetched again. Older kernels are removed after a new one lands.
# Prints the kernel directory on stdout.
#
# The standard (not -cloud-) flavour is used because the cloud kernel is built
# without 9p (CONFIG_NET_9P is not set), which the harness uses to share the host's
# file system with the VM.
set -eu

cache=${1:?usage: fetch-kernel.sh CACHE_DIR}
meta=${AGENT_SUPERVISOR_VM_KERNEL_META:-linux-image-amd64}
kernels="$cache/kernel"
mkdir -p "$kernels"

resolve() {
    # `apt-cache depends linux-image-amd64` prints "  Depends: linux-image-6.1.0-56-amd64".
    pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    [ -n "$pkg" ] || return 1
    version=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
    [ -n "$version" ] && [ "$version" != "(none)" ] || return 1
}

apt_update_once() {
    if [ "$(id -u)" = 0 ] && [ -z "${updated:-}" ]; then
        echo "fetch-kernel: running apt-get update" >&2
        apt-get update -qq >&2 || echo "fetch-kernel: apt-get update failed" >&2
        updated=1
        return 0
    fi
    return 1
}

if ! resolve; then
    apt_update_once || true
    resolve || {
        echo "fetch-kernel: cannot resolve the kernel package behind $meta with apt-cache depends (run apt-get update?)" >&2
        exit 1
    }
fi

# Writes DIR/vmlinux from the xz payload of DIR/root/boot/vmlinuz-RELEASE (the way
# the kernel's scripts/extract-vmlinux finds it); no vmlinux when that fails.
extract_vmlinux() {
    command -v xz >/dev/null 2>&1 || return 0
    img="$1/root/boot/vmlinuz-$(cat "$1/release")"
    for pos in $(tr '\3757zXZ\000\n' '\nabcde=' < "$img" | grep -abo '^abcde' | cut -d: -f1); do
        pos=${pos%%:*}
        if tail -c+"$pos" "$img" | xz -dc --single-stream > "$1/vmlinux.tmp" 2>/dev/null &&
            [ "$(head -c 4 "$1/vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            mv "$1/vmlinux.tmp" "$1/vmlinux"
            return 0
        fi
    done
    rm -f "$1/vmlinux.tmp"
}

dir="$kernels/${pkg}_$version"
if [ -f "$dir/complete" ]; then
    # A kernel cached before vmlinux was extracted gets it now.
    [ -f "$dir/vmlinux" ] || extract_vmlinux "$dir"
    echo "$dir"
    exit 0
fi

tmp=$(mktemp -d "$kernels/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

download() {
    (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2)
}
if ! download; then
    # Stale package lists point at a version the mirror no longer has.
    apt_update_once && resolve && dir="$kernels/${pkg}_$version" && download || {
        echo "fetch-kernel: apt-get download $pkg=$version failed" >&2
        exit 1
    }
fi

deb=$(ls "$tmp"/*.deb)
dpkg -x "$deb" "$tmp/root"
rm -f "$deb"
release=$(ls "$tmp/root/lib/modules")
[ -n "$release" ] && [ -d "$tmp/root/lib/modules/$release" ] || {
    echo "fetch-kernel: no lib/modules/RELEASE in $pkg" >&2
    exit 1
}
ls "$tmp/root/boot/vmlinuz-$release" >/dev/null
depmod -b "$tmp/root" "$release"
echo "$release" > "$tmp/release"
extract_vmlinux "$tmp"
echo "$pkg $version" > "$tmp/complete"
chmod 755 "$tmp"

if mv -T "$tmp" "$dir" 2>/dev/null; then
    trap - EXIT INT TERM
else
    # Another run won the race; its copy is as good as ours.
    [ -f "$dir/complete" ] || { echo "fetch-kernel: cannot move kernel into $dir" >&2; exit 1; }
fi

# Drop kernels superseded by this one (and stale temporary directories).
for old in "$kernels"/*; do
    [ "$old" = "$dir" ] || rm -rf "$old"
done
find "$kernels" -maxdepth 1 -name '.fetch.*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
echo "$dir"
