//! `Registry`: loading directories by priority (a good, a bad and an overridden file),
//! device lookup, and the merged edits of a request.

#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};

use agent_cdi::{parse, CdiError, Registry};

const NVIDIA: &str = include_str!("fixtures/nvidia.yaml");
const VENDOR: &str = include_str!("fixtures/vendor.json");

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("agent-cdi-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("etc/cdi")).unwrap();
        fs::create_dir_all(dir.join("run/cdi")).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn names(list: &[(&agent_cdi::Spec, &agent_cdi::Device)]) -> Vec<String> {
    list.iter()
        .map(|(s, d)| format!("{}={}", s.kind, d.name))
        .collect()
}

#[test]
fn load_reports_bad_files_and_later_dirs_win() {
    let tmp = TempDir::new("load");
    let etc = tmp.0.join("etc/cdi");
    let run = tmp.0.join("run/cdi");
    fs::write(etc.join("nvidia.yaml"), NVIDIA).unwrap();
    fs::write(etc.join("vendor.json"), VENDOR).unwrap();
    fs::write(
        etc.join("broken.yaml"),
        NVIDIA.replace("kind: nvidia.com/gpu", "kind: gpu"),
    )
    .unwrap();
    fs::write(etc.join("README.txt"), "not a spec").unwrap();
    fs::create_dir(etc.join("sub.yaml")).unwrap();
    // /var/run/cdi redefines GPU 1 (another node) and adds one device.
    let override_spec = "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ncontainerEdits:\n  env: [FROM=run]\ndevices:\n- name: \"1\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia1\n      hostPath: /dev/nvidia7\n- name: \"2\"\n  containerEdits:\n    deviceNodes: [{path: /dev/nvidia2}]\n";
    fs::write(run.join("nvidia-transient.yml"), override_spec).unwrap();
    let missing = tmp.0.join("nope/cdi");

    let (reg, errors) = Registry::load(&[&etc, &missing, &run]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].to_string(),
        format!(
            "{}: kind: kind \"gpu\": missing '/': expected vendor.com/class",
            etc.join("broken.yaml").display()
        )
    );
    let sources: Vec<&Path> = reg.specs().iter().map(|s| s.source.as_path()).collect();
    assert_eq!(
        sources,
        [
            etc.join("nvidia.yaml"),
            etc.join("vendor.json"),
            run.join("nvidia-transient.yml")
        ]
    );

    let (spec, dev) = reg.device("nvidia.com/gpu=1").unwrap();
    assert_eq!(spec.source, run.join("nvidia-transient.yml"));
    assert_eq!(
        dev.container_edits.device_nodes[0].host(),
        Path::new("/dev/nvidia7")
    );
    let (spec, _) = reg.device("nvidia.com/gpu=0").unwrap();
    assert_eq!(spec.source, etc.join("nvidia.yaml"));
    assert!(reg.device("nvidia.com/gpu=3").is_none());
    assert!(reg.device("vendor.com/fpga=card0").is_some());

    assert_eq!(
        names(&reg.devices_of("nvidia.com/gpu")),
        [
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
            "nvidia.com/gpu=all",
            "nvidia.com/gpu=1",
            "nvidia.com/gpu=2"
        ]
    );
    assert!(reg.devices_of("amd.com/gpu").is_empty());
}

#[test]
fn same_directory_conflict_disables_the_device() {
    let tmp = TempDir::new("conflict");
    let etc = tmp.0.join("etc/cdi");
    fs::write(etc.join("a.yaml"), NVIDIA).unwrap();
    fs::write(
        etc.join("b.yaml"),
        NVIDIA.replace("  name: all", "  name: every"),
    )
    .unwrap();
    let (reg, errors) = Registry::load(&[&etc]);
    let conflicts: Vec<String> = errors
        .iter()
        .filter_map(|e| match e {
            CdiError::Conflict { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), conflicts.len());
    assert_eq!(
        conflicts,
        [
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=1",
            "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"
        ]
    );
    assert!(reg.device("nvidia.com/gpu=0").is_none());
    assert!(reg.device("nvidia.com/gpu=all").is_some());
    assert!(reg.device("nvidia.com/gpu=every").is_some());
    let err = reg.edits(&["nvidia.com/gpu=1".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "CDI device \"nvidia.com/gpu=1\" is defined by two specs of the same priority, {} and {}: neither is used",
            etc.join("a.yaml").display(),
            etc.join("b.yaml").display()
        )
    );
}

#[test]
fn edits_merge_spec_edits_once_then_each_device() {
    let nvidia = parse(Path::new("/etc/cdi/nvidia.yaml"), NVIDIA).unwrap();
    let vendor = parse(Path::new("/etc/cdi/vendor.json"), VENDOR).unwrap();
    let reg = Registry::from_specs(vec![nvidia.clone(), vendor.clone()]);

    let ask: Vec<String> = [
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=1",
        "vendor.com/fpga=card0",
        "nvidia.com/gpu=0",
    ]
    .map(String::from)
    .to_vec();
    let edits = reg.edits(&ask).unwrap();
    let nodes: Vec<&str> = edits
        .device_nodes
        .iter()
        .map(|n| n.path.to_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [
            "/dev/nvidia-modeset",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidiactl",
            "/dev/nvidia0",
            "/dev/dri/card1",
            "/dev/dri/renderD128",
            "/dev/nvidia1",
            "/dev/dri/card2",
            "/dev/dri/renderD129",
            "/dev/fpga0",
        ]
    );
    assert_eq!(edits.env, ["NVIDIA_VISIBLE_DEVICES=void", "FPGA_RUNTIME=1"]);
    assert_eq!(edits.mounts.len(), 4 + 1);
    // spec hooks (2), GPU 0's (2), GPU 1's (1), the FPGA's (1)
    let hooks: Vec<&str> = edits
        .hooks
        .iter()
        .map(|h| h.args.get(2).unwrap_or(&h.args[0]).as_str())
        .collect();
    assert_eq!(
        hooks,
        [
            "create-symlinks",
            "update-ldcache",
            "create-symlinks",
            "chmod",
            "create-symlinks",
            "fpga-reset"
        ]
    );
    assert_eq!(edits.additional_gids, [44], "gid 0 is dropped");

    assert_eq!(reg.edits(&[]).unwrap(), Default::default());
    assert_eq!(
        reg.edits(&["nvidia.com/gpu=0".into(), "nvidia.com/gpu=7".into()])
            .unwrap_err(),
        CdiError::UnknownDevice {
            name: "nvidia.com/gpu=7".into()
        }
    );
    assert_eq!(
        reg.edits(&["gpu0".into()]).unwrap_err().to_string(),
        "CDI device name \"gpu0\": missing '=': expected vendor.com/class=device"
    );

    // from_specs: a later spec has priority.
    let mut later = nvidia.clone();
    later.source = "/var/run/cdi/nvidia.yaml".into();
    let reg = Registry::from_specs(vec![nvidia, later]);
    assert_eq!(
        reg.device("nvidia.com/gpu=all").unwrap().0.source,
        Path::new("/var/run/cdi/nvidia.yaml")
    );
    assert_eq!(reg.devices_of("nvidia.com/gpu").len(), 4);
}
