//! A group's devices, resolved at plan time: the GPUs its `gpus:` asks for (through CDI specs
//! where they name `nvidia.com/gpu` devices, through NVML otherwise), the device nodes, the
//! driver's files, environment and symlinks that come with them, and the group's device
//! cgroup list (the default list plus exactly the granted nodes) — for every group, with GPUs
//! or not.
//!
//! Scheduling rules, checked across the host's groups in file order: a GPU given to two
//! groups is an error unless both say `shared: true`; asking for more GPUs than the host has
//! (or free ones) is an error unless `optional: true`, which runs the group without GPU
//! ([`GpuState::Absent`], shown in `status` and `/metrics`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use agent_config::model::{GpuDevices, GpuId, GpuRequest};
use agent_devices::{Access, DeviceRule, DeviceType};

use crate::BindPlan;

mod inventory;

pub use inventory::{
    gpu_node_minor, HostGpu, Inventory, Source, CDI_GPU_KIND, DRIVER_LIBS, DRIVER_TOOLS, LIB_DIRS,
    NVIDIA_CONTROL_NODES, NVIDIA_MAJOR,
};

/// What a group was given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuState {
    /// It asks for none.
    #[default]
    NotRequested,
    /// These GPUs (their labels: CDI names, UUIDs or indices), found through `source`.
    Granted { gpus: Vec<String>, source: Source },
    /// It asked with `optional: true` and runs without, for this reason.
    Absent { reason: String },
}

/// A device node made in the group's `/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Its path inside the group.
    pub path: PathBuf,
    /// The host's node (bound when the node cannot be made).
    pub host_path: PathBuf,
    pub kind: DeviceType,
    pub major: u32,
    pub minor: u32,
    pub file_mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub access: Access,
}

/// Everything a group gets for its devices.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub gpus: GpuState,
    pub nodes: Vec<DeviceNode>,
    /// The driver's libraries and tools, read-only.
    pub mounts: Vec<BindPlan>,
    /// `NVIDIA_VISIBLE_DEVICES`, `CUDA_VISIBLE_DEVICES` and the CDI spec's variables.
    pub env: Vec<(String, String)>,
    /// `(target, link)`: symlinks made in the group's root (CDI `create-symlinks` hooks).
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    /// Paths hidden in the group: the other GPUs' `/proc/driver/nvidia/gpus/<bus id>`.
    pub masked: Vec<PathBuf>,
    /// The device cgroup: deny all, [`agent_devices::default_rules`], then each node.
    pub rules: Vec<DeviceRule>,
}

impl Default for DevicePlan {
    fn default() -> Self {
        DevicePlan {
            gpus: GpuState::NotRequested,
            nodes: Vec::new(),
            mounts: Vec::new(),
            env: Vec::new(),
            symlinks: Vec::new(),
            masked: Vec::new(),
            rules: agent_devices::group_rules(&[]),
        }
    }
}

/// A finding of the GPU resolution: an error, or a warning (the group still runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuFinding {
    pub error: bool,
    pub message: String,
}

/// Hands out the host's GPUs to its groups, in file order.
pub struct Allocator {
    dirs: Vec<PathBuf>,
    inventory: Option<Inventory>,
    /// GPU index -> the groups given it and whether each shares it.
    given: BTreeMap<u32, Vec<(String, bool)>>,
    /// A group asked already (the CDI errors are reported).
    asked: bool,
}

impl Allocator {
    /// Discovers the GPUs (CDI specs in `dirs`, then NVML) on the first request only.
    pub fn new(dirs: Vec<PathBuf>) -> Allocator {
        Allocator {
            dirs,
            inventory: None,
            given: BTreeMap::new(),
            asked: false,
        }
    }

    /// An allocator over a known inventory (tests).
    pub fn with_inventory(inventory: Inventory) -> Allocator {
        Allocator {
            dirs: Vec::new(),
            inventory: Some(inventory),
            given: BTreeMap::new(),
            asked: false,
        }
    }

    fn inventory(&mut self) -> &Inventory {
        let dirs = &self.dirs;
        self.inventory
            .get_or_insert_with(|| Inventory::discover(dirs))
    }

    /// The devices of `group` for its request (`None`: no `gpus:`), with what to report.
    pub fn group(
        &mut self,
        group: &str,
        req: Option<&GpuRequest>,
    ) -> (DevicePlan, Vec<GpuFinding>) {
        let Some(req) = req else {
            return (DevicePlan::default(), Vec::new());
        };
        if req.devices == GpuDevices::Count(0) {
            return (DevicePlan::default(), Vec::new());
        }
        // Unreadable CDI specs are said once, with the first group that asks for GPUs.
        let first = !std::mem::replace(&mut self.asked, true);
        let mut findings: Vec<GpuFinding> = self
            .inventory()
            .cdi_errors
            .iter()
            .filter(|_| first)
            .map(|e| GpuFinding {
                error: false,
                message: format!("CDI spec skipped: {e}"),
            })
            .collect();
        let picked = self.pick(group, req);
        let chosen = match picked {
            Ok(c) => c,
            Err((conflict, why)) => {
                // A GPU claimed twice is a mistake in the file, optional or not.
                let absent = req.optional && !conflict;
                let suffix = if absent {
                    " (optional: the group runs without GPU)"
                } else {
                    ""
                };
                findings.push(GpuFinding {
                    error: !absent,
                    message: format!("group {group}: {why}{suffix}"),
                });
                let plan = DevicePlan {
                    gpus: GpuState::Absent { reason: why },
                    ..DevicePlan::default()
                };
                return (plan, findings);
            }
        };
        for g in &chosen {
            self.given
                .entry(g.index)
                .or_default()
                .push((group.to_string(), req.shared));
        }
        let inv = self.inventory();
        let result = match inv.source {
            Some(Source::Cdi) => edits::from_cdi(inv, &chosen),
            _ => edits::from_nvml(inv, &chosen),
        };
        match result {
            Ok((plan, warnings)) => {
                findings.extend(warnings.into_iter().map(|w| GpuFinding {
                    error: false,
                    message: format!("group {group}: {w}"),
                }));
                (plan, findings)
            }
            Err(why) => {
                findings.push(GpuFinding {
                    error: true,
                    message: format!("group {group}: {why}"),
                });
                (DevicePlan::default(), findings)
            }
        }
    }

    /// The GPUs for a request, or (whether it is a conflict with another group, why not).
    fn pick(&mut self, group: &str, req: &GpuRequest) -> Result<Vec<HostGpu>, (bool, String)> {
        let given = self.given.clone();
        let inv = self.inventory();
        if let Some(why) = &inv.absent {
            return Err((false, why.clone()));
        }
        let total = inv.gpus.len();
        // Who else holds a GPU this group may not share.
        let blocked = |g: &HostGpu| -> Option<String> {
            given.get(&g.index).and_then(|holders| {
                holders
                    .iter()
                    .find(|(other, shared)| other != group && !(req.shared && *shared))
                    .map(|(other, _)| other.clone())
            })
        };
        let conflict = |g: &HostGpu, other: &str| {
            (
                true,
                format!(
                    "{} is also given to group {other}; set `shared: true` on both groups to share it",
                    g.label()
                ),
            )
        };
        let wanted: Vec<HostGpu> = match &req.devices {
            GpuDevices::All => inv.gpus.clone(),
            GpuDevices::Count(n) => {
                let n = *n as usize;
                if n > total {
                    return Err((false, format!("{n} GPU(s) requested, {total} present")));
                }
                let free: Vec<HostGpu> = inv
                    .gpus
                    .iter()
                    .filter(|g| blocked(g).is_none())
                    .take(n)
                    .cloned()
                    .collect();
                if free.len() < n {
                    let held = inv.gpus.iter().find_map(|g| blocked(g).map(|o| (g, o)));
                    return Err(match held {
                        Some((g, other)) => (
                            true,
                            format!(
                                "{n} GPU(s) requested, {} of {total} free: {} is given to group {other}; set `shared: true` on both groups to share it",
                                free.len(),
                                g.label()
                            ),
                        ),
                        None => (false, format!("{n} GPU(s) requested, {total} present")),
                    });
                }
                return Ok(free);
            }
            GpuDevices::List(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    let found = inv.gpus.iter().find(|g| match id {
                        GpuId::Index(i) => g.index == *i,
                        GpuId::Uuid(u) => g.uuid.as_deref() == Some(u.as_str()),
                    });
                    match found {
                        Some(g) => out.push(g.clone()),
                        None => {
                            let what = match id {
                                GpuId::Index(i) => format!("GPU index {i}"),
                                GpuId::Uuid(u) => format!("GPU {u}"),
                            };
                            let known: Vec<String> = inv.gpus.iter().map(HostGpu::label).collect();
                            return Err((
                                false,
                                format!("{what} is not present (GPUs: {})", known.join(", ")),
                            ));
                        }
                    }
                }
                out
            }
        };
        if wanted.is_empty() {
            return Err((false, "no GPU is present".into()));
        }
        for g in &wanted {
            if let Some(other) = blocked(g) {
                return Err(conflict(g, &other));
            }
        }
        Ok(wanted)
    }
}

/// The device cgroup rule of a node.
pub fn node_rule(n: &DeviceNode) -> DeviceRule {
    DeviceRule {
        allow: true,
        kind: n.kind,
        major: Some(n.major),
        minor: Some(n.minor),
        access: n.access,
    }
}

mod edits;

#[cfg(test)]
mod tests;
