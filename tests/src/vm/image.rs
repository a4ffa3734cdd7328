//! Kernel and initramfs of the test VM, both cached: the kernel package fetched and
//! prepared by `tests/vm/fetch-kernel.sh`, the initramfs (static busybox, `tests/vm/init.sh`,
//! the modules of [`super::MODULES`] with their dependencies and `modules.dep`) built here.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{check_status, find_program, io_err, set_mode, write_file, TempDir, VmError, MODULES};

const INIT_SH: &str = include_str!("../../vm/init.sh");
const FETCH_KERNEL_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vm/fetch-kernel.sh");
/// Bumped when the initramfs layout changes in a way its cache key does not see.
const INITRAMFS_FORMAT: u32 = 1;

/// A kernel from the cache: the unpacked package and its module release.
#[derive(Debug, Clone)]
pub(super) struct Kernel {
    /// `CACHE/kernel/PACKAGE_VERSION`.
    dir: PathBuf,
    /// The package's unpack (`dpkg -x`).
    root: PathBuf,
    /// What QEMU boots: `vmlinux` (uncompressed, PVH entry) when `fetch-kernel.sh` could
    /// extract it, else the package's bzImage, which the guest decompresses (~2 s slower).
    pub(super) boot_image: PathBuf,
    pub(super) release: String,
}

impl Kernel {
    fn load(dir: &Path) -> Option<Kernel> {
        if !dir.join("complete").is_file() {
            return None;
        }
        let release = fs::read_to_string(dir.join("release"))
            .ok()?
            .trim()
            .to_string();
        let root = dir.join("root");
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
        let modules_dep = root.join("lib/modules").join(&release).join("modules.dep");
        let vmlinux = dir.join("vmlinux");
        let boot_image = if vmlinux.is_file() { vmlinux } else { vmlinuz };
        (boot_image.is_file() && modules_dep.is_file()).then(|| Kernel {
            dir: dir.to_path_buf(),
            root,
            boot_image,
            release,
        })
    }

    fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The most recently completed kernel in the cache.
pub(super) fn cached_kernel(cache: &Path) -> Option<Kernel> {
    let entries = fs::read_dir(cache.join("kernel")).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let kernel = Kernel::load(&e.path())?;
            let done = fs::metadata(kernel.dir.join("complete"))
                .and_then(|m| m.modified())
                .ok()?;
            Some((done, kernel))
        })
        .max_by_key(|(done, _)| *done)
        .map(|(_, kernel)| kernel)
}

/// The cached kernel, fetched first with `tests/vm/fetch-kernel.sh` when there is none.
pub(super) fn kernel(cache: &Path) -> Result<Kernel, VmError> {
    if let Some(kernel) = cached_kernel(cache) {
        return Ok(kernel);
    }
    let script = PathBuf::from(FETCH_KERNEL_SH);
    let out = Command::new("sh")
        .arg(&script)
        .arg(cache)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VmError::Spawn {
            program: script.clone(),
            source,
        })?;
    let fetched = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(VmError::KernelFetch {
            script,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Kernel::load(Path::new(&fetched)).ok_or_else(|| VmError::KernelFetch {
        script,
        status: out.status.to_string(),
        stderr: format!("it printed {fetched:?}, which is not a complete kernel directory"),
    })
}

/// Module name as the kernel knows it: file name without `.ko[.xz|.gz|.zst]`, `-` as `_`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Paths (relative to `lib/modules/RELEASE`) of `wanted` and everything they depend on,
/// each after its dependencies, from the text of `modules.dep`.
fn module_closure(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let list = rest.split_whitespace().map(String::from).collect();
        deps.insert(module_name(path), (path.trim().to_string(), list));
    }
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let (path, list) = deps.get(name).ok_or_else(|| name.to_string())?;
        for dep in list {
            visit(&module_name(dep), deps, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for name in wanted {
        visit(&name.replace('-', "_"), &deps, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// The cached initramfs for `kernel`, built when missing.
pub(super) fn initramfs(cache: &Path, kernel: &Kernel) -> Result<PathBuf, VmError> {
    let busybox = find_static_busybox().map_err(VmError::Unavailable)?;
    let bb_meta = fs::metadata(&busybox).map_err(io_err("cannot stat", &busybox))?;
    let bb_mtime = bb_meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let key = format!(
        "{INITRAMFS_FORMAT}\0{}\0{INIT_SH}\0{}\0{}\0{bb_mtime}",
        kernel.dir.display(),
        MODULES.join(","),
        bb_meta.len()
    );
    let dir = cache.join("initramfs");
    let target = dir.join(format!(
        "initramfs-{}-{:016x}.cpio",
        kernel.release,
        fnv1a(key.as_bytes())
    ));
    if target.is_file() {
        return Ok(target);
    }
    fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    let staging = TempDir::new_in(&dir, ".build")?;
    let root = staging.path.join("root");
    build_initramfs_tree(&root, kernel, &busybox)?;

    let mut files = Vec::new();
    list_tree(&root, Path::new(""), &mut files)?;
    let partial = staging.path.join("initramfs.cpio");
    let out = fs::File::create(&partial).map_err(io_err("cannot create", &partial))?;
    let mut cpio = Command::new(find_program("cpio").unwrap_or_else(|| PathBuf::from("cpio")));
    cpio.args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(Stdio::piped());
    let mut child = cpio.spawn().map_err(|source| VmError::Spawn {
        program: PathBuf::from("cpio"),
        source,
    })?;
    let mut list = String::new();
    for f in &files {
        let _ = writeln!(list, "{}", f.display());
    }
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(list.as_bytes())
            .map_err(io_err("cannot write the file list to cpio for", &partial))?;
    }
    let done = child
        .wait_with_output()
        .map_err(io_err("cannot wait for cpio writing", &partial))?;
    check_status("cpio -o -H newc", done.status, &done.stderr)?;
    fs::rename(&partial, &target).map_err(io_err("cannot move the initramfs to", &target))?;
    prune_initramfs(&dir, &target);
    Ok(target)
}

/// Lays out the initramfs: busybox, `/init`, the modules with `modules.dep`, `/etc/vm-modules`.
fn build_initramfs_tree(root: &Path, kernel: &Kernel, busybox: &Path) -> Result<(), VmError> {
    let mods_rel = PathBuf::from("lib/modules").join(&kernel.release);
    for d in ["bin", "dev", "etc", "io", "newroot", "proc", "sys", "tmp"] {
        let p = root.join(d);
        fs::create_dir_all(&p).map_err(io_err("cannot create", &p))?;
    }
    let bb = root.join("bin/busybox");
    fs::copy(busybox, &bb).map_err(io_err("cannot copy busybox to", &bb))?;
    set_mode(&bb, 0o755)?;
    let init = root.join("init");
    write_file(&init, INIT_SH.as_bytes())?;
    set_mode(&init, 0o755)?;

    let src_mods = kernel.modules_dir();
    let modules_dep = src_mods.join("modules.dep");
    let dep_text = fs::read_to_string(&modules_dep).map_err(io_err("cannot read", &modules_dep))?;
    let closure = module_closure(&dep_text, MODULES).map_err(|module| VmError::ModuleMissing {
        module,
        modules_dep: modules_dep.clone(),
    })?;
    let dst_mods = root.join(&mods_rel);
    let mut load_list = String::new();
    for rel in &closure {
        let src = src_mods.join(rel);
        // busybox insmod reads plain .ko files only: unpack compressed ones (xz, newer Debian).
        let plain = rel.split(".ko").next().unwrap_or(rel).to_string() + ".ko";
        let dst = dst_mods.join(&plain);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        if rel.ends_with(".ko") {
            fs::copy(&src, &dst).map_err(io_err("cannot copy module", &src))?;
        } else if rel.ends_with(".ko.xz") {
            let out = Command::new(busybox)
                .arg("xzcat")
                .arg(&src)
                .output()
                .map_err(|source| VmError::Spawn {
                    program: busybox.to_path_buf(),
                    source,
                })?;
            check_status(
                &format!("busybox xzcat {}", src.display()),
                out.status,
                &out.stderr,
            )?;
            write_file(&dst, &out.stdout)?;
        } else {
            return Err(VmError::InvalidOptions(format!(
                "module {} is compressed in a format the harness cannot unpack",
                src.display()
            )));
        }
        let _ = writeln!(load_list, "{plain}");
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let src = src_mods.join(f);
        if src.is_file() {
            let dst = dst_mods.join(f);
            fs::copy(&src, &dst).map_err(io_err("cannot copy", &src))?;
        }
    }
    write_file(&root.join("etc/vm-modules"), load_list.as_bytes())?;
    let depmod = find_program("depmod").unwrap_or_else(|| PathBuf::from("depmod"));
    let out = Command::new(&depmod)
        .arg("-b")
        .arg(root)
        .arg(&kernel.release)
        .output()
        .map_err(|source| VmError::Spawn {
            program: depmod.clone(),
            source,
        })?;
    check_status(
        &format!("depmod -b {} {}", root.display(), kernel.release),
        out.status,
        &out.stderr,
    )
}

/// Removes initramfs images other than `keep` that were not used for a day.
fn prune_initramfs(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if path != keep && old {
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// Relative paths of everything under `root`, parents before children.
fn list_tree(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), VmError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(io_err("cannot list", &dir))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let child = rel.join(e.file_name());
        out.push(child.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            list_tree(root, &child, out)?;
        }
    }
    Ok(())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A statically linked busybox (`busybox-static`): the initramfs has no C library.
pub(super) fn find_static_busybox() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = find_program("busybox")
        .into_iter()
        .chain(["/bin/busybox", "/usr/bin/busybox"].map(PathBuf::from))
        .collect();
    for path in &candidates {
        if let Ok(bytes) = fs::read(path) {
            if elf_is_static(&bytes) {
                return Ok(path.clone());
            }
        }
    }
    Err("a statically linked busybox (apt-get install busybox-static)".to_string())
}

/// Whether `bytes` is a 64-bit little-endian ELF without a program interpreter (`PT_INTERP`).
fn elf_is_static(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(phnum)).all(|i| {
        let offset = usize::try_from(phoff).unwrap_or(usize::MAX);
        let entry = offset.saturating_add(i * usize::from(phentsize));
        u32_at(entry).is_some_and(|kind| kind != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_puts_dependencies_first() {
        let dep = "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n\
                   kernel/net/9p/9pnet.ko:\n\
                   kernel/fs/netfs/netfs.ko:\n\
                   kernel/net/9p/9pnet_virtio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/net/9p/9pnet.ko\n\
                   kernel/drivers/virtio/virtio_ring.ko:\n\
                   kernel/lib/crypto/libcurve25519-generic.ko.xz:\n";
        let order = module_closure(dep, &["9p", "9pnet_virtio", "libcurve25519_generic"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/net/9p/9pnet.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/fs/9p/9p.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/net/9p/9pnet_virtio.ko",
                "kernel/lib/crypto/libcurve25519-generic.ko.xz",
            ]
        );
        assert_eq!(module_closure(dep, &["veth"]).unwrap_err(), "veth");
    }

    #[test]
    fn static_busybox_is_recognised() {
        assert!(!elf_is_static(b"#!/bin/sh\n"));
        if let Ok(bytes) = fs::read("/bin/sh") {
            assert!(
                !elf_is_static(&bytes),
                "/bin/sh is dynamically linked on Debian"
            );
        }
    }
}
