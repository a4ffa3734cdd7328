//! The edits that come with granted GPUs: from their CDI specs (device nodes, mounts,
//! environment, the hooks nvidia-ctk writes), or, through NVML, the nodes, driver files and
//! masks that `nvidia-container-cli` would give.

use std::path::{Path, PathBuf};

use agent_devices::{Access, DeviceType};

use super::{node_rule, DeviceNode, DevicePlan, GpuState, HostGpu, Inventory, Source};
use crate::BindPlan;

/// A plan and its warnings, or why the GPUs cannot be given.
type Edits = Result<(DevicePlan, Vec<String>), String>;

fn node_of(r: agent_cdi::ResolvedNode) -> Result<DeviceNode, String> {
    let kind = match r.kind {
        agent_cdi::NodeKind::Char => DeviceType::Char,
        agent_cdi::NodeKind::Block => DeviceType::Block,
        agent_cdi::NodeKind::Fifo => {
            return Err(format!(
                "device node {}: a FIFO is not a device this supervisor passes through",
                r.path.display()
            ))
        }
    };
    let access: Access = r
        .permissions
        .parse()
        .map_err(|e| format!("device node {}: permissions: {e}", r.path.display()))?;
    Ok(DeviceNode {
        path: r.path,
        host_path: r.host_path,
        kind,
        major: r.major,
        minor: r.minor,
        file_mode: r.file_mode,
        uid: r.uid,
        gid: r.gid,
        access,
    })
}

fn visible(gpus: &[HostGpu]) -> Vec<(String, String)> {
    let uuids: Option<Vec<String>> = gpus.iter().map(|g| g.uuid.clone()).collect();
    let nvidia = match &uuids {
        Some(u) => u.join(","),
        None => gpus
            .iter()
            .map(|g| g.index.to_string())
            .collect::<Vec<_>>()
            .join(","),
    };
    // Inside the group only the granted GPUs can be opened, so CUDA numbers them from 0;
    // UUIDs name them whatever the numbering.
    let cuda = match uuids {
        Some(u) => u.join(","),
        None => (0..gpus.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
    };
    vec![
        ("NVIDIA_VISIBLE_DEVICES".to_string(), nvidia),
        ("CUDA_VISIBLE_DEVICES".to_string(), cuda),
    ]
}

fn finish(mut plan: DevicePlan) -> DevicePlan {
    let granted: Vec<_> = plan.nodes.iter().map(node_rule).collect();
    plan.rules = agent_devices::group_rules(&granted);
    plan
}

/// The granted GPUs' CDI edits, merged (each spec's own edits once, then each device's).
pub(super) fn from_cdi(inv: &Inventory, gpus: &[HostGpu]) -> Edits {
    let registry = inv
        .registry
        .as_ref()
        .ok_or_else(|| "no CDI spec was read".to_string())?;
    let names: Vec<String> = gpus.iter().filter_map(|g| g.cdi_name.clone()).collect();
    let edits = registry.edits(&names).map_err(|e| e.to_string())?;
    let mut warnings = Vec::new();
    let mut plan = DevicePlan {
        gpus: GpuState::Granted {
            gpus: gpus.iter().map(HostGpu::label).collect(),
            source: Source::Cdi,
        },
        ..DevicePlan::default()
    };
    for n in &edits.device_nodes {
        let node = node_of(n.resolve().map_err(|e| e.to_string())?)?;
        if !plan.nodes.iter().any(|m| m.path == node.path) {
            plan.nodes.push(node);
        }
    }
    for m in &edits.mounts {
        plan.mounts.push(BindPlan {
            source: m.host_path.clone(),
            target: m.container_path.clone(),
            readonly: m.options.iter().any(|o| o == "ro"),
        });
    }
    let mut ld_path: Vec<String> = Vec::new();
    for h in &edits.hooks {
        match hook(&h.args) {
            Hook::Symlinks(links) => plan.symlinks.extend(links),
            Hook::LdCache(folders) => ld_path.extend(folders),
            Hook::Harmless => {}
            Hook::Other => warnings.push(format!(
                "CDI hook {} {} is not run (only nvidia-ctk's create-symlinks and update-ldcache are carried out)",
                h.path.display(),
                h.args.join(" ")
            )),
        }
    }
    for kv in &edits.env {
        if let Some((k, v)) = kv.split_once('=') {
            plan.env.push((k.to_string(), v.to_string()));
        }
    }
    plan.env
        .retain(|(k, _)| k != "NVIDIA_VISIBLE_DEVICES" && k != "CUDA_VISIBLE_DEVICES");
    plan.env.extend(visible(gpus));
    if !ld_path.is_empty() {
        // What `update-ldcache` does for the dynamic loader, without writing the group's
        // (often read-only) `/etc/ld.so.cache`.
        plan.env
            .push(("LD_LIBRARY_PATH".to_string(), ld_path.join(":")));
    }
    Ok((finish(plan), warnings))
}

enum Hook {
    Symlinks(Vec<(PathBuf, PathBuf)>),
    LdCache(Vec<String>),
    /// Hooks with nothing to do here (`chmod` of nodes made with their mode already,
    /// `disable-device-node-modification`).
    Harmless,
    Other,
}

/// nvidia-ctk's hooks: `nvidia-ctk hook create-symlinks --link TARGET::LINK ...`,
/// `nvidia-ctk hook update-ldcache --folder DIR ...` (also as `nvidia-cdi-hook ...`).
fn hook(args: &[String]) -> Hook {
    let sub = args
        .iter()
        .position(|a| a == "hook")
        .and_then(|i| args.get(i + 1))
        .or_else(|| args.get(1));
    let values = |flag: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == flag {
                if let Some(v) = it.next() {
                    out.push(v.clone());
                }
            } else if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                out.push(v.to_string());
            }
        }
        out
    };
    match sub.map(String::as_str) {
        Some("create-symlinks") => Hook::Symlinks(
            values("--link")
                .iter()
                .filter_map(|l| l.split_once("::"))
                .map(|(t, l)| (PathBuf::from(t), PathBuf::from(l)))
                .collect(),
        ),
        Some("update-ldcache") => Hook::LdCache(values("--folder")),
        Some("chmod") | Some("disable-device-node-modification") => Hook::Harmless,
        _ => Hook::Other,
    }
}

/// The nodes, driver files and masks for GPUs found through NVML.
pub(super) fn from_nvml(inv: &Inventory, gpus: &[HostGpu]) -> Edits {
    let mut plan = DevicePlan {
        gpus: GpuState::Granted {
            gpus: gpus.iter().map(HostGpu::label).collect(),
            source: Source::Nvml,
        },
        ..DevicePlan::default()
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for g in gpus {
        let minor = g
            .minor
            .ok_or_else(|| format!("NVML gives no device minor number for {}", g.label()))?;
        paths.push(PathBuf::from(format!("/dev/nvidia{minor}")));
    }
    paths.extend(
        super::NVIDIA_CONTROL_NODES
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists()),
    );
    for p in paths {
        let n = agent_cdi::DeviceNode::at(p);
        plan.nodes
            .push(node_of(n.resolve().map_err(|e| e.to_string())?)?);
    }
    for f in driver_files() {
        plan.mounts.push(BindPlan {
            source: f.clone(),
            target: f,
            readonly: true,
        });
    }
    for g in &inv.gpus {
        if gpus.iter().any(|x| x.index == g.index) {
            continue;
        }
        if let Some(bus) = &g.pci_bus_id {
            plan.masked
                .push(Path::new("/proc/driver/nvidia/gpus").join(bus));
        }
    }
    plan.env.extend(visible(gpus));
    Ok((finish(plan), Vec::new()))
}

/// The driver's libraries (every version file of each [`super::DRIVER_LIBS`] name) and tools
/// on this machine.
fn driver_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in super::LIB_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                super::DRIVER_LIBS.iter().any(|l| name.starts_with(l))
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        out.extend(found);
    }
    for t in super::DRIVER_TOOLS {
        let p = Path::new("/usr/bin").join(t);
        if p.exists() {
            out.push(p);
        }
    }
    out
}
