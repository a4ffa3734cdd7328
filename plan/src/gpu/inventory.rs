//! The GPUs of the machine a plan is resolved on: from CDI specs where they name
//! `nvidia.com/gpu` devices, else from NVML (device minor numbers, UUIDs, PCI bus ids), else
//! the reason there are none. Read once per plan, and only when a group of the host asks for
//! GPUs.

use std::path::{Path, PathBuf};

/// The CDI kind of NVIDIA's GPUs (`nvidia-ctk cdi generate`).
pub const CDI_GPU_KIND: &str = "nvidia.com/gpu";

/// NVIDIA's character device major number (`/dev/nvidia<minor>`, `/dev/nvidiactl` = 255).
pub const NVIDIA_MAJOR: u32 = 195;

/// The control nodes a process needs beside its GPUs' own nodes, where the host has them.
pub const NVIDIA_CONTROL_NODES: &[&str] = &[
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// The driver's user-space files mounted read-only into a group given GPUs through NVML
/// (with CDI, the spec lists them): file name prefixes searched in [`LIB_DIRS`].
pub const DRIVER_LIBS: &[&str] = &[
    "libcuda.so",
    "libnvidia-ml.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libcudadebugger.so",
    "libnvidia-gpucomp.so",
    "libnvidia-allocator.so",
    "libnvidia-cfg.so",
    "libnvidia-opencl.so",
];

/// Where [`DRIVER_LIBS`] are looked for (Debian/Ubuntu multiarch, then RHEL, then plain).
pub const LIB_DIRS: &[&str] = &["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"];

/// The driver's tools, looked for in `/usr/bin`.
pub const DRIVER_TOOLS: &[&str] = &["nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"];

/// Where the GPUs were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cdi,
    Nvml,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cdi => "cdi",
            Source::Nvml => "nvml",
        }
    }
}

/// One GPU of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGpu {
    /// Its index (the CDI device name when that is a number, else its place; NVML's index).
    pub index: u32,
    /// `GPU-...`, where known.
    pub uuid: Option<String>,
    /// The fully qualified CDI name (`nvidia.com/gpu=0`), with CDI.
    pub cdi_name: Option<String>,
    /// Its node's minor number (`/dev/nvidia<minor>`), where known.
    pub minor: Option<u32>,
    /// Its PCI bus id (`0000:01:00.0`, as in `/proc/driver/nvidia/gpus/`), where known.
    pub pci_bus_id: Option<String>,
}

impl HostGpu {
    /// How the GPU is named to the user: the CDI name, else the UUID, else the index.
    pub fn label(&self) -> String {
        self.cdi_name
            .clone()
            .or_else(|| self.uuid.clone())
            .unwrap_or_else(|| format!("GPU {}", self.index))
    }
}

/// The machine's GPUs, or why there are none.
#[derive(Debug)]
pub struct Inventory {
    pub source: Option<Source>,
    /// In index order.
    pub gpus: Vec<HostGpu>,
    /// Why no GPU was found (`gpus` is then empty): names the CDI directories and NVML's
    /// answer.
    pub absent: Option<String>,
    /// CDI spec files that could not be read (each message names its file and field).
    pub cdi_errors: Vec<String>,
    /// The CDI specs read (empty when none name GPUs).
    pub registry: Option<agent_cdi::Registry>,
}

impl Inventory {
    /// Looks at the CDI specs in `cdi_dirs` (lowest priority first), then NVML.
    pub fn discover(cdi_dirs: &[PathBuf]) -> Inventory {
        let dirs: Vec<&Path> = cdi_dirs.iter().map(PathBuf::as_path).collect();
        let (registry, errors) = agent_cdi::Registry::load(&dirs);
        let cdi_errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let gpus = from_cdi(&registry);
        if !gpus.is_empty() {
            return Inventory {
                source: Some(Source::Cdi),
                gpus,
                absent: None,
                cdi_errors,
                registry: Some(registry),
            };
        }
        let shown: Vec<String> = cdi_dirs.iter().map(|d| d.display().to_string()).collect();
        match from_nvml() {
            Ok(gpus) if !gpus.is_empty() => Inventory {
                source: Some(Source::Nvml),
                gpus,
                absent: None,
                cdi_errors,
                registry: None,
            },
            result => {
                let nvml = match result {
                    Ok(_) => "NVML reports no GPU".to_string(),
                    Err(e) => e,
                };
                Inventory {
                    source: None,
                    gpus: Vec::new(),
                    absent: Some(format!(
                        "no GPU on this machine: no CDI spec names {CDI_GPU_KIND} devices (looked in {}) and {nvml}",
                        shown.join(", ")
                    )),
                    cdi_errors,
                    registry: None,
                }
            }
        }
    }

    /// An inventory of the given CDI specs only (tests, and `check` of a spec directory).
    pub fn from_registry(registry: agent_cdi::Registry) -> Inventory {
        let gpus = from_cdi(&registry);
        let absent = gpus
            .is_empty()
            .then(|| format!("no CDI spec names {CDI_GPU_KIND} devices"));
        Inventory {
            source: (!gpus.is_empty()).then_some(Source::Cdi),
            gpus,
            absent,
            cdi_errors: Vec::new(),
            registry: Some(registry),
        }
    }
}

/// The GPUs the CDI specs name: every `nvidia.com/gpu` device but `all`. nvidia-ctk may name
/// one GPU twice (by index and by UUID): devices whose edits bring the same
/// `/dev/nvidia<minor>` node are one GPU.
fn from_cdi(registry: &agent_cdi::Registry) -> Vec<HostGpu> {
    let mut out: Vec<HostGpu> = Vec::new();
    for (i, (_, d)) in registry
        .devices_of(CDI_GPU_KIND)
        .into_iter()
        .filter(|(_, d)| d.name != "all")
        .enumerate()
    {
        let minor = d
            .container_edits
            .device_nodes
            .iter()
            .find_map(|n| gpu_node_minor(&n.path));
        let name = format!("{CDI_GPU_KIND}={}", d.name);
        let uuid = d.name.starts_with("GPU-").then(|| d.name.clone());
        if let Some(same) = out.iter_mut().find(|g| minor.is_some() && g.minor == minor) {
            // Keep the index name; remember the UUID.
            if same.uuid.is_none() {
                same.uuid = uuid;
            }
            continue;
        }
        out.push(HostGpu {
            index: d.name.parse().unwrap_or(i as u32),
            uuid,
            cdi_name: Some(name),
            minor,
            pci_bus_id: None,
        });
    }
    out.sort_by_key(|g| g.index);
    out
}

/// `/dev/nvidia<N>` -> N.
pub fn gpu_node_minor(path: &Path) -> Option<u32> {
    path.to_str()?.strip_prefix("/dev/nvidia")?.parse().ok()
}

fn from_nvml() -> Result<Vec<HostGpu>, String> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| match e {
        nvml_wrapper::error::NvmlError::LibloadingError(_) => {
            "NVML is not available: libnvidia-ml.so.1 could not be loaded (no NVIDIA driver on this machine)".to_string()
        }
        other => format!("NVML failed to initialise: {other}"),
    })?;
    let n = nvml
        .device_count()
        .map_err(|e| format!("NVML cannot count devices: {e}"))?;
    let mut out = Vec::new();
    for index in 0..n {
        let d = nvml
            .device_by_index(index)
            .map_err(|e| format!("NVML cannot open GPU {index}: {e}"))?;
        out.push(HostGpu {
            index,
            uuid: d.uuid().ok(),
            cdi_name: None,
            minor: d.minor_number().ok(),
            pci_bus_id: d.pci_info().ok().map(|p| proc_bus_id(&p.bus_id)),
        });
    }
    Ok(out)
}

/// NVML's bus id (`00000000:01:00.0`, an 8-digit domain) as `/proc/driver/nvidia/gpus/` names
/// it (`0000:01:00.0`).
pub fn proc_bus_id(nvml: &str) -> String {
    let id = nvml.to_lowercase();
    match id.split_once(':') {
        Some((domain, rest)) if domain.len() == 8 => format!("{}:{rest}", &domain[4..]),
        _ => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_as_proc_names_them() {
        assert_eq!(proc_bus_id("00000000:01:00.0"), "0000:01:00.0");
        assert_eq!(proc_bus_id("0000:3B:00.0"), "0000:3b:00.0");
    }

    #[test]
    fn node_minor() {
        assert_eq!(gpu_node_minor(Path::new("/dev/nvidia3")), Some(3));
        assert_eq!(gpu_node_minor(Path::new("/dev/nvidiactl")), None);
        assert_eq!(gpu_node_minor(Path::new("/dev/nvidia-uvm")), None);
    }

    #[test]
    fn no_gpu_names_the_places_looked() {
        let dir = std::env::temp_dir().join(format!("plan-gpu-none-{}", std::process::id()));
        let inv = Inventory::discover(std::slice::from_ref(&dir));
        // This runs on machines without NVIDIA's driver (CI): the reason names both.
        if inv.source.is_none() {
            let why = inv.absent.unwrap_or_default();
            assert!(why.contains(&dir.display().to_string()), "{why}");
            assert!(why.contains("NVML"), "{why}");
        }
    }
}
