//! What the host's GPUs are doing, for `/metrics`: per GPU (NVML) utilisation, frame-buffer
//! memory used and free, temperature and power, and per group the GPU memory of its
//! processes. NVML is loaded once per daemon; where it cannot be (no NVIDIA driver), the
//! report says why and `/metrics` says NVML is absent instead of leaving a silent gap.

use std::sync::OnceLock;

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use serde::{Deserialize, Serialize};

/// The host's GPUs at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// NVML could be loaded and initialised.
    pub nvml: bool,
    /// Why NVML is not there, or what failed reading it.
    pub error: Option<String>,
    pub devices: Vec<GpuDevice>,
    /// Group name and the GPU memory its processes use, in bytes.
    pub groups: Vec<(String, u64)>,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    /// Percent of time a kernel ran over the last sample period.
    pub utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
}

fn nvml() -> &'static Result<nvml_wrapper::Nvml, String> {
    static NVML: OnceLock<Result<nvml_wrapper::Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| {
        nvml_wrapper::Nvml::init().map_err(|e| match e {
            nvml_wrapper::error::NvmlError::LibloadingError(_) => {
                "NVML is not available: libnvidia-ml.so.1 could not be loaded (no NVIDIA driver on this machine)".to_string()
            }
            other => format!("NVML failed to initialise: {other}"),
        })
    })
}

/// Whether NVML is loaded (the first call tries to load it).
pub fn nvml_loaded() -> bool {
    nvml().is_ok()
}

/// Reads every GPU; `groups` are the host's groups with the pids of their processes (host
/// pid namespace, as NVML reports them). Blocking (NVML calls): run it on a blocking thread.
pub fn read(groups: &[(String, Vec<u32>)]) -> GpuReport {
    let nvml = match nvml() {
        Ok(n) => n,
        Err(e) => {
            return GpuReport {
                nvml: false,
                error: Some(e.clone()),
                ..GpuReport::default()
            }
        }
    };
    let mut report = GpuReport {
        nvml: true,
        ..GpuReport::default()
    };
    let count = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => {
            report.error = Some(format!("NVML cannot count devices: {e}"));
            return report;
        }
    };
    let mut per_group: Vec<(String, u64)> = groups.iter().map(|(g, _)| (g.clone(), 0)).collect();
    for index in 0..count {
        let d = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                report.error = Some(format!("NVML cannot open GPU {index}: {e}"));
                continue;
            }
        };
        let memory = d.memory_info().ok();
        report.devices.push(GpuDevice {
            index,
            uuid: d.uuid().unwrap_or_default(),
            name: d.name().unwrap_or_default(),
            utilization_percent: d.utilization_rates().ok().map(|u| u.gpu),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_free_bytes: memory.as_ref().map(|m| m.free),
            temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok(),
            power_watts: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        });
        for p in d.running_compute_processes().unwrap_or_default() {
            let UsedGpuMemory::Used(bytes) = p.used_gpu_memory else {
                continue;
            };
            if let Some(i) = groups.iter().position(|(_, pids)| pids.contains(&p.pid)) {
                per_group[i].1 += bytes;
            }
        }
    }
    report.groups = per_group;
    report
}
