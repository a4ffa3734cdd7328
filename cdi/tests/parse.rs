//! `parse` over an nvidia-ctk-style YAML spec, a JSON spec, and each invalid case with
//! the exact error it gives.

#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

use std::path::{Path, PathBuf};

use agent_cdi::{parse, CdiError, NodeKind};

const NVIDIA: &str = include_str!("fixtures/nvidia.yaml");
const VENDOR: &str = include_str!("fixtures/vendor.json");
const YAML_FILE: &str = "/etc/cdi/nvidia.yaml";
const JSON_FILE: &str = "/var/run/cdi/vendor.json";

#[test]
fn nvidia_ctk_yaml_spec() {
    let spec = parse(Path::new(YAML_FILE), NVIDIA).unwrap();
    assert_eq!(spec.cdi_version, "0.5.0");
    assert_eq!(spec.kind, "nvidia.com/gpu");
    assert_eq!(spec.source, PathBuf::from(YAML_FILE));
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["0", "1", "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "all"]
    );

    let edits = &spec.container_edits;
    assert_eq!(edits.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
    let nodes: Vec<&Path> = edits
        .device_nodes
        .iter()
        .map(|n| n.path.as_path())
        .collect();
    assert_eq!(
        nodes,
        [
            Path::new("/dev/nvidia-modeset"),
            Path::new("/dev/nvidia-uvm"),
            Path::new("/dev/nvidia-uvm-tools"),
            Path::new("/dev/nvidiactl")
        ]
    );
    assert!(edits
        .device_nodes
        .iter()
        .all(|n| n.kind.is_none() && n.host_path.is_none()));
    assert_eq!(edits.device_nodes[3].host(), Path::new("/dev/nvidiactl"));
    assert_eq!(edits.hooks.len(), 2);
    assert_eq!(edits.hooks[0].hook_name, "createContainer");
    assert_eq!(edits.hooks[0].path, Path::new("/usr/bin/nvidia-ctk"));
    assert_eq!(
        edits.hooks[0].args[..3],
        ["nvidia-ctk", "hook", "create-symlinks"]
    );
    assert_eq!(
        edits.hooks[1].args,
        [
            "nvidia-ctk",
            "hook",
            "update-ldcache",
            "--folder",
            "/usr/lib/x86_64-linux-gnu"
        ]
    );
    assert_eq!(edits.hooks[1].timeout, None);
    assert_eq!(edits.mounts.len(), 4);
    assert_eq!(
        edits.mounts[0].host_path,
        Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15")
    );
    assert_eq!(
        edits.mounts[1].container_path,
        Path::new("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.550.54.15")
    );
    assert_eq!(
        edits.mounts[2].container_path,
        Path::new("/usr/bin/nvidia-smi")
    );
    assert_eq!(edits.mounts[2].options, ["ro", "nosuid", "nodev", "bind"]);
    assert_eq!(edits.mounts[2].kind, None);

    let gpu1 = &spec.devices[1].container_edits;
    assert_eq!(gpu1.device_nodes[0].path, Path::new("/dev/nvidia1"));
    assert_eq!(
        gpu1.hooks[0].args[4],
        "../card2::/dev/dri/by-path/pci-0000:65:00.0-card"
    );
    assert_eq!(spec.devices[0].container_edits.hooks[1].args[4], "755");
    assert_eq!(spec.devices[3].container_edits.device_nodes.len(), 6);
}

#[test]
fn json_spec_with_every_field() {
    let spec = parse(Path::new(JSON_FILE), VENDOR).unwrap();
    assert_eq!(spec.kind, "vendor.com/fpga");
    assert_eq!(spec.annotations["vendor.com/driver"], "4.2.0");
    assert_eq!(spec.container_edits.additional_gids, [44, 0]);
    let dev = &spec.devices[0];
    assert_eq!(dev.annotations["vendor.com/slot"], "3");
    let node = &dev.container_edits.device_nodes[0];
    assert_eq!(node.path, Path::new("/dev/fpga0"));
    assert_eq!(node.host(), Path::new("/dev/xfpga0"));
    assert_eq!(node.kind, Some(NodeKind::Char));
    assert_eq!((node.major, node.minor), (Some(239), Some(0)));
    assert_eq!(node.file_mode, Some(0o660));
    assert_eq!(node.permissions.as_deref(), Some("rw"));
    assert_eq!((node.uid, node.gid), (Some(0), Some(44)));
    let mount = &dev.container_edits.mounts[0];
    assert_eq!(mount.kind.as_deref(), Some("tmpfs"));
    assert_eq!(mount.host_path, Path::new("tmpfs"));
    let hook = &dev.container_edits.hooks[0];
    assert_eq!(hook.hook_name, "poststop");
    assert_eq!(hook.env, ["FPGA_SLOT=3"]);
    assert_eq!(hook.timeout, Some(10));
}

#[test]
fn yaml_details_unquoted_names_yml_and_node_types() {
    let text = "cdiVersion: 1.1.0\nkind: example.com/dev\ndevices:\n- name: 0\n  containerEdits:\n    deviceNodes:\n    - {path: /dev/a, type: u}\n    - {path: /dev/b, type: b}\n    - {path: /dev/c, type: p}\n";
    let spec = parse(Path::new("/etc/cdi/x.yml"), text).unwrap();
    assert_eq!(spec.devices[0].name, "0");
    let kinds: Vec<_> = spec.devices[0]
        .container_edits
        .device_nodes
        .iter()
        .map(|n| n.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            Some(NodeKind::Char),
            Some(NodeKind::Block),
            Some(NodeKind::Fifo)
        ]
    );
    // The YAML spelling of the older field name is accepted too.
    let text = "cdiVersion: 0.7.0\nkind: example.com/dev\ndevices:\n- name: a\n  containerEdits:\n    additionalGIDs: [5]\n";
    assert_eq!(
        parse(Path::new("x.yaml"), text).unwrap().devices[0]
            .container_edits
            .additional_gids,
        [5]
    );
}

/// The message `parse` gives for the YAML fixture with `from` replaced by `to`.
fn yaml_error(from: &str, to: &str) -> String {
    assert!(NVIDIA.contains(from), "fixture lacks {from:?}");
    let text = NVIDIA.replacen(from, to, 1);
    parse(Path::new(YAML_FILE), &text).unwrap_err().to_string()
}

fn json_error(from: &str, to: &str) -> String {
    assert!(VENDOR.contains(from), "fixture lacks {from:?}");
    let text = VENDOR.replacen(from, to, 1);
    parse(Path::new(JSON_FILE), &text).unwrap_err().to_string()
}

#[test]
fn invalid_yaml_cases_name_file_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("cdiVersion: 0.5.0", "cdiVersion: 2.0.0",
         "/etc/cdi/nvidia.yaml: cdiVersion: unsupported CDI version \"2.0.0\" (supported: 0.3.x to 0.8.x, 1.0.x and 1.1.x)"),
        ("cdiVersion: 0.5.0", "cdiVersion: 0.2.0",
         "/etc/cdi/nvidia.yaml: cdiVersion: unsupported CDI version \"0.2.0\" (supported: 0.3.x to 0.8.x, 1.0.x and 1.1.x)"),
        ("cdiVersion: 0.5.0", "cdiVersion: 0.4.0",
         "/etc/cdi/nvidia.yaml: cdiVersion: 0.4.0 uses a device name starting with a digit, which needs CDI 0.5.0 or newer"),
        ("kind: nvidia.com/gpu", "kind: nvidia.com",
         "/etc/cdi/nvidia.yaml: kind: kind \"nvidia.com\": missing '/': expected vendor.com/class"),
        ("kind: nvidia.com/gpu", "kind: nvidia.com/gpu/x",
         "/etc/cdi/nvidia.yaml: kind: invalid character '/' in class \"gpu/x\""),
        ("kind: nvidia.com/gpu", "kind: 9nvidia.com/gpu",
         "/etc/cdi/nvidia.yaml: kind: vendor \"9nvidia.com\" must start with a letter"),
        ("  name: \"1\"", "  name: \"0\"",
         "/etc/cdi/nvidia.yaml: devices[1].name: device \"0\" is defined twice in this spec"),
        ("  name: all", "  name: all-",
         "/etc/cdi/nvidia.yaml: devices[3].name: device name \"all-\" must end with a letter or digit"),
        ("    - path: /dev/nvidia1", "    - path: dev/nvidia1",
         "/etc/cdi/nvidia.yaml: devices[1].containerEdits.deviceNodes[0].path: dev/nvidia1 must be absolute"),
        ("  - path: /dev/nvidiactl", "  - path: /dev/nvidiactl\n    hostPath: nvidiactl",
         "/etc/cdi/nvidia.yaml: containerEdits.deviceNodes[3].hostPath: nvidiactl must be absolute"),
        ("  - path: /dev/nvidiactl", "  - path: /dev/nvidiactl\n    permissions: rwx",
         "/etc/cdi/nvidia.yaml: containerEdits.deviceNodes[3].permissions: \"rwx\" is not a combination of r, w and m (or \"none\")"),
        ("  - path: /dev/nvidiactl", "  - path: /dev/nvidiactl\n    type: x",
         "/etc/cdi/nvidia.yaml: containerEdits.deviceNodes[3].type: line 9 column 5: invalid value: string \"x\", expected one of \"c\", \"u\", \"b\", \"p\""),
        ("  - NVIDIA_VISIBLE_DEVICES=void", "  - NVIDIA_VISIBLE_DEVICES",
         "/etc/cdi/nvidia.yaml: containerEdits.env[0]: \"NVIDIA_VISIBLE_DEVICES\" is not of the form KEY=VALUE"),
        ("  - containerPath: /usr/bin/nvidia-smi", "  - containerPath: usr/bin/nvidia-smi",
         "/etc/cdi/nvidia.yaml: containerEdits.mounts[2].containerPath: usr/bin/nvidia-smi must be absolute"),
        ("    path: /usr/bin/nvidia-ctk\n  mounts:", "    path: nvidia-ctk\n  mounts:",
         "/etc/cdi/nvidia.yaml: containerEdits.hooks[1].path: nvidia-ctk must be absolute"),
        ("    hookName: createContainer", "    hookName: precreate",
         "/etc/cdi/nvidia.yaml: containerEdits.hooks[0].hookName: \"precreate\" is not one of prestart, createRuntime, createContainer, startContainer, poststart, poststop"),
        ("      hookName: createContainer\n      path: /usr/bin/nvidia-ctk\n  name: \"1\"",
         "      hookName: createContainer\n      path: /usr/bin/nvidia-ctk\n      timeout: 0\n  name: \"1\"",
         "/etc/cdi/nvidia.yaml: devices[1].containerEdits.hooks[0].timeout: must be over 0 seconds"),
        ("      hookName: createContainer\n      path: /usr/bin/nvidia-ctk\n  name: \"1\"",
         "      hookName: createContainer\n      path: /usr/bin/nvidia-ctk\n      env: [\"=x\"]\n  name: \"1\"",
         "/etc/cdi/nvidia.yaml: devices[1].containerEdits.hooks[0].env[0]: \"=x\" is not of the form KEY=VALUE"),
        ("- containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n  name: GPU",
         "- containerEdits: {}\n  name: GPU",
         "/etc/cdi/nvidia.yaml: devices[2].containerEdits: device \"GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c\" has no edits"),
    ];
    for (from, to, want) in cases {
        assert_eq!(&yaml_error(from, to), want, "replacing {from:?}");
    }
}

#[test]
fn invalid_json_cases_name_file_and_field() {
    assert_eq!(
        json_error("\"cdiVersion\": \"0.7.0\"", "\"cdiVersion\": \"0.6.0\""),
        "/var/run/cdi/vendor.json: cdiVersion: 0.6.0 uses additionalGids, which needs CDI 0.7.0 or newer"
    );
    assert_eq!(
        json_error("\"cdiVersion\": \"0.7.0\"", "\"cdiVersion\": \"1.2.0\""),
        "/var/run/cdi/vendor.json: cdiVersion: unsupported CDI version \"1.2.0\" (supported: 0.3.x to 0.8.x, 1.0.x and 1.1.x)"
    );
    assert_eq!(
        json_error("\"major\": 239", "\"major\": -1"),
        "/var/run/cdi/vendor.json: devices[0].containerEdits.deviceNodes[0].major: invalid value: integer `-1`, expected u32 at line 17 column 85"
    );
    assert_eq!(
        json_error("\"timeout\": 10", "\"timeout\": \"10\""),
        "/var/run/cdi/vendor.json: devices[0].containerEdits.hooks[0].timeout: invalid type: string \"10\", expected u32 at line 25 column 51"
    );
    assert_eq!(
        json_error("\"hostPath\": \"tmpfs\", ", ""),
        "/var/run/cdi/vendor.json: devices[0].containerEdits.mounts[0].hostPath: is required"
    );
    let empty = json_error(
        &VENDOR[VENDOR.find("  \"devices\"").unwrap()..VENDOR.rfind('}').unwrap()],
        "  \"devices\": []\n",
    );
    assert_eq!(
        empty,
        "/var/run/cdi/vendor.json: devices: a spec must define at least one device"
    );
    assert_eq!(
        parse(Path::new(JSON_FILE), "{} {}")
            .unwrap_err()
            .to_string(),
        "/var/run/cdi/vendor.json: .: trailing characters at line 1 column 4"
    );
    // A missing cdiVersion is an unsupported (empty) one.
    assert!(matches!(
        parse(Path::new(JSON_FILE), "{\"kind\": \"a.com/b\"}"),
        Err(CdiError::Version { version, .. }) if version.is_empty()
    ));
}

#[test]
fn yaml_syntax_errors_name_the_file() {
    let err = parse(Path::new(YAML_FILE), "cdiVersion: [0.5.0\nkind: x").unwrap_err();
    assert!(
        matches!(&err, CdiError::Syntax { file, .. } if file == Path::new(YAML_FILE)),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'), "{err}");
    let err = parse(
        Path::new(YAML_FILE),
        &NVIDIA.replacen("    - ro\n", "    - {ro: 1}\n", 1),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/etc/cdi/nvidia.yaml: containerEdits.mounts[0].options[0]: "),
        "{err}"
    );
}
