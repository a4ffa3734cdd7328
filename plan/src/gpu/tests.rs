//! The allocator over CDI specs written here (two fake GPUs): what each request gets, the
//! scheduling rules, and the edits (nodes, rules, env, symlinks, mounts).

use std::path::{Path, PathBuf};

use agent_config::model::{GpuDevices, GpuId, GpuRequest};
use agent_devices::{Access, DeviceType};

use super::*;

const SPEC: &str = r#"
cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia0, type: c, major: 195, minor: 0, fileMode: 438}
  - name: "1"
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia1, type: c, major: 195, minor: 1, fileMode: 438}
  - name: GPU-1111
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia1, type: c, major: 195, minor: 1, fileMode: 438}
  - name: all
    containerEdits:
      deviceNodes:
        - {path: /dev/nvidia0, type: c, major: 195, minor: 0, fileMode: 438}
        - {path: /dev/nvidia1, type: c, major: 195, minor: 1, fileMode: 438}
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void, NVIDIA_DRIVER_CAPABILITIES=all]
  deviceNodes:
    - {path: /dev/nvidiactl, type: c, major: 195, minor: 255, fileMode: 438}
  mounts:
    - {hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54, containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54, options: [ro, nosuid, nodev, bind]}
  hooks:
    - hookName: createContainer
      path: /usr/bin/nvidia-ctk
      args: [nvidia-ctk, hook, create-symlinks, --link, libcuda.so.550.54::/usr/lib/x86_64-linux-gnu/libcuda.so.1]
    - hookName: createContainer
      path: /usr/bin/nvidia-ctk
      args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
    - hookName: createContainer
      path: /usr/bin/some-vendor-hook
      args: [some-vendor-hook, prepare]
"#;

fn allocator() -> Allocator {
    let spec = agent_cdi::parse(Path::new("/etc/cdi/nvidia.yaml"), SPEC).expect("the spec parses");
    let inv = Inventory::from_registry(agent_cdi::Registry::from_specs(vec![spec]));
    Allocator::with_inventory(inv)
}

fn req(devices: GpuDevices, optional: bool, shared: bool) -> GpuRequest {
    GpuRequest {
        devices,
        optional,
        shared,
    }
}

fn granted(p: &DevicePlan) -> Vec<String> {
    match &p.gpus {
        GpuState::Granted { gpus, .. } => gpus.clone(),
        other => panic!("not granted: {other:?}"),
    }
}

#[test]
fn one_gpu_gets_its_node_the_control_node_and_nothing_else() {
    let mut a = allocator();
    let (p, f) = a.group("gpu-infra", Some(&req(GpuDevices::Count(1), false, false)));
    assert_eq!(granted(&p), ["nvidia.com/gpu=0"]);
    let paths: Vec<&Path> = p.nodes.iter().map(|n| n.path.as_path()).collect();
    assert_eq!(
        paths,
        [Path::new("/dev/nvidiactl"), Path::new("/dev/nvidia0")]
    );
    // The device cgroup: the granted nodes allowed, the other GPU not.
    let rw = Access {
        read: true,
        write: true,
        mknod: false,
    };
    assert!(agent_devices::allows(
        &p.rules,
        DeviceType::Char,
        195,
        0,
        rw
    ));
    assert!(agent_devices::allows(
        &p.rules,
        DeviceType::Char,
        195,
        255,
        rw
    ));
    assert!(!agent_devices::allows(
        &p.rules,
        DeviceType::Char,
        195,
        1,
        rw
    ));
    assert!(agent_devices::allows(&p.rules, DeviceType::Char, 1, 3, rw));
    assert!(!agent_devices::allows(
        &p.rules,
        DeviceType::Block,
        8,
        0,
        rw
    ));
    // Env: ours win over the spec's `void`; the spec's others stay.
    let env = |k: &str| p.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(env("NVIDIA_VISIBLE_DEVICES"), Some("0"));
    assert_eq!(env("CUDA_VISIBLE_DEVICES"), Some("0"));
    assert_eq!(env("NVIDIA_DRIVER_CAPABILITIES"), Some("all"));
    assert_eq!(env("LD_LIBRARY_PATH"), Some("/usr/lib/x86_64-linux-gnu"));
    assert_eq!(
        p.symlinks,
        [(
            PathBuf::from("libcuda.so.550.54"),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so.1")
        )]
    );
    assert!(p.mounts.iter().all(|m| m.readonly));
    // The vendor hook that is not carried out is said, not dropped.
    assert!(
        f.iter()
            .any(|f| !f.error && f.message.contains("some-vendor-hook")),
        "{f:?}"
    );
}

#[test]
fn the_uuid_name_is_the_same_gpu_and_counts_once() {
    let mut a = allocator();
    let (p, _) = a.group("all", Some(&req(GpuDevices::All, false, false)));
    assert_eq!(granted(&p), ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]);
    let mut b = allocator();
    let (p, f) = b.group(
        "by-uuid",
        Some(&req(
            GpuDevices::List(vec![GpuId::Uuid("GPU-1111".into())]),
            false,
            false,
        )),
    );
    assert_eq!(granted(&p), ["nvidia.com/gpu=1"], "{f:?}");
}

#[test]
fn two_groups_on_one_gpu_need_shared_on_both() {
    let mut a = allocator();
    let one = req(GpuDevices::List(vec![GpuId::Index(0)]), false, false);
    let (_, f) = a.group("a", Some(&one));
    assert!(f.iter().all(|f| !f.error), "{f:?}");
    let (p, f) = a.group("b", Some(&one));
    let e = f.iter().find(|f| f.error).expect("a conflict");
    assert!(
        e.message.contains("also given to group a") && e.message.contains("shared: true"),
        "{}",
        e.message
    );
    assert!(matches!(p.gpus, GpuState::Absent { .. }));
    // Optional does not excuse a conflict.
    let opt = req(GpuDevices::List(vec![GpuId::Index(0)]), true, false);
    let (_, f) = a.group("c", Some(&opt));
    assert!(f.iter().any(|f| f.error), "{f:?}");

    let mut s = allocator();
    let shared = req(GpuDevices::List(vec![GpuId::Index(0)]), false, true);
    let (_, f1) = s.group("a", Some(&shared));
    let (p, f2) = s.group("b", Some(&shared));
    assert!(f1.iter().chain(&f2).all(|f| !f.error), "{f1:?} {f2:?}");
    assert_eq!(granted(&p), ["nvidia.com/gpu=0"]);
}

#[test]
fn a_count_takes_the_free_gpus_first() {
    let mut a = allocator();
    let (p1, _) = a.group("a", Some(&req(GpuDevices::Count(1), false, false)));
    let (p2, _) = a.group("b", Some(&req(GpuDevices::Count(1), false, false)));
    assert_eq!(granted(&p1), ["nvidia.com/gpu=0"]);
    assert_eq!(granted(&p2), ["nvidia.com/gpu=1"]);
    let (_, f) = a.group("c", Some(&req(GpuDevices::Count(1), false, false)));
    let e = f.iter().find(|f| f.error).expect("none free");
    assert!(e.message.contains("0 of 2 free"), "{}", e.message);
}

#[test]
fn more_than_present_is_an_error_unless_optional() {
    let mut a = allocator();
    let (_, f) = a.group("big", Some(&req(GpuDevices::Count(3), false, false)));
    let e = f.iter().find(|f| f.error).expect("too many");
    assert!(
        e.message
            .contains("group big: 3 GPU(s) requested, 2 present"),
        "{}",
        e.message
    );
    let (p, f) = a.group("big", Some(&req(GpuDevices::Count(3), true, false)));
    assert!(f.iter().all(|f| !f.error), "{f:?}");
    assert!(f[0]
        .message
        .contains("optional: the group runs without GPU"));
    match p.gpus {
        GpuState::Absent { reason } => assert!(reason.contains("3 GPU(s) requested")),
        other => panic!("{other:?}"),
    }
    // Without GPUs the group still has the default device cgroup.
    assert_eq!(p.rules, agent_devices::group_rules(&[]));
}

#[test]
fn no_request_is_the_default_list_and_no_discovery() {
    // An allocator whose discovery would read a directory that does not exist: never asked.
    let mut a = Allocator::new(vec![PathBuf::from("/nonexistent/cdi")]);
    let (p, f) = a.group("plain", None);
    assert_eq!(p, DevicePlan::default());
    assert!(f.is_empty());
    assert!(a.inventory.is_none());
}
