//! The host's own series in an exposition: its end of the bridge, its GPUs, and the daemon's
//! process (the Prometheus client libraries' `process_*` names, with a `host` label, and
//! glibc's heap). Split from `metrics.rs`, which renders them with the agents' and groups'.

use prometheus_client::registry::{Registry, Unit};

use super::memory::ProcessStats;
use super::metrics::{labels, saturating_i64, FloatCounter, FloatGauge, IntCounter, IntGauge};

/// `agent_supervisor_bridge_*`: one series per peer of the host's bridge.
pub(super) fn register_bridge(
    registry: &mut Registry,
    bridges: &[(&str, &super::api::BridgeStatus)],
) {
    let up = IntGauge::default();
    let age = FloatGauge::default();
    let rtt = FloatGauge::default();
    let rx = IntCounter::default();
    let tx = IntCounter::default();
    for (host, p) in bridges
        .iter()
        .flat_map(|(host, b)| b.peers.iter().map(move |p| (*host, p)))
    {
        let l = labels(&[("host", host), ("peer", &p.host)]);
        up.get_or_create(&l).set(i64::from(p.up));
        if let Some(a) = p.handshake_age_seconds {
            age.get_or_create(&l).set(a);
        }
        if let Some(r) = p.rtt_ms {
            rtt.get_or_create(&l).set(r / 1e3);
        }
        rx.get_or_create(&l).inc_by(p.rx_bytes);
        tx.get_or_create(&l).inc_by(p.tx_bytes);
    }
    registry.register(
        "agent_supervisor_bridge_up",
        "1 when the peer answered the latest echo through the tunnel",
        up,
    );
    registry.register_with_unit(
        "agent_supervisor_bridge_handshake_age",
        "Time since the latest completed WireGuard handshake with the peer; absent before the first",
        Unit::Seconds,
        age,
    );
    registry.register_with_unit(
        "agent_supervisor_bridge_rtt",
        "Round-trip time of the latest echo to the peer's overlay address; absent when it went unanswered",
        Unit::Seconds,
        rtt,
    );
    registry.register_with_unit(
        "agent_supervisor_bridge_receive",
        "Bytes received from the peer through the tunnel",
        Unit::Bytes,
        rx,
    );
    registry.register_with_unit(
        "agent_supervisor_bridge_transmit",
        "Bytes sent to the peer through the tunnel",
        Unit::Bytes,
        tx,
    );
}

/// GPU series under DCGM exporter's names (`DCGM_FI_DEV_*`, labels `gpu`, `UUID`,
/// `modelName`), each group's GPU memory, and whether NVML is there at all.
pub(super) fn register_gpus(
    registry: &mut Registry,
    gpus: &[(&str, &crate::gpu_stats::GpuReport)],
) {
    const MIB: u64 = 1 << 20;
    let available = IntGauge::default();
    let util = IntGauge::default();
    let fb_used = IntGauge::default();
    let fb_free = IntGauge::default();
    let temp = IntGauge::default();
    let power = FloatGauge::default();
    let group_mem = IntGauge::default();
    for (host, r) in gpus {
        available
            .get_or_create(&labels(&[("host", host)]))
            .set(i64::from(r.nvml));
        for d in &r.devices {
            let index = d.index.to_string();
            let l = labels(&[
                ("host", host),
                ("gpu", &index),
                ("UUID", &d.uuid),
                ("modelName", &d.name),
            ]);
            if let Some(u) = d.utilization_percent {
                util.get_or_create(&l).set(i64::from(u));
            }
            if let Some(b) = d.memory_used_bytes {
                fb_used.get_or_create(&l).set(saturating_i64(b / MIB));
            }
            if let Some(b) = d.memory_free_bytes {
                fb_free.get_or_create(&l).set(saturating_i64(b / MIB));
            }
            if let Some(t) = d.temperature_celsius {
                temp.get_or_create(&l).set(i64::from(t));
            }
            if let Some(w) = d.power_watts {
                power.get_or_create(&l).set(w);
            }
        }
        if r.nvml {
            for (group, bytes) in &r.groups {
                group_mem
                    .get_or_create(&labels(&[("host", host), ("group", group)]))
                    .set(saturating_i64(*bytes));
            }
        }
    }
    registry.register(
        "agent_supervisor_gpu_nvml_available",
        "1 when NVML (the NVIDIA driver's library) is loaded, 0 when it is absent: then there are no GPU series",
        available,
    );
    registry.register("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)", util);
    registry.register(
        "DCGM_FI_DEV_FB_USED",
        "Framebuffer memory used (in MiB)",
        fb_used,
    );
    registry.register(
        "DCGM_FI_DEV_FB_FREE",
        "Framebuffer memory free (in MiB)",
        fb_free,
    );
    registry.register("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)", temp);
    registry.register("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)", power);
    registry.register_with_unit(
        "agent_supervisor_group_gpu_memory",
        "GPU memory used by the group's processes",
        Unit::Bytes,
        group_mem,
    );
}

/// `process_*` and `agent_supervisor_daemon_heap_*`: one series per host's daemon.
pub(super) fn register_process(registry: &mut Registry, processes: &[(&str, &ProcessStats)]) {
    let resident = IntGauge::default();
    let anon = IntGauge::default();
    let threads = IntGauge::default();
    let fds = IntGauge::default();
    let cpu = FloatCounter::default();
    let heap_used = IntGauge::default();
    let heap_free = IntGauge::default();
    for (host, p) in processes {
        let l = labels(&[("host", host)]);
        resident
            .get_or_create(&l)
            .set(saturating_i64(p.resident_bytes));
        anon.get_or_create(&l).set(saturating_i64(p.anon_bytes));
        threads.get_or_create(&l).set(saturating_i64(p.threads));
        fds.get_or_create(&l).set(saturating_i64(p.open_fds));
        cpu.get_or_create(&l).inc_by(p.cpu_seconds.max(0.0));
        if let Some(b) = p.heap_in_use_bytes {
            heap_used.get_or_create(&l).set(saturating_i64(b));
        }
        if let Some(b) = p.heap_free_bytes {
            heap_free.get_or_create(&l).set(saturating_i64(b));
        }
    }
    registry.register_with_unit(
        "process_resident_memory",
        "Resident memory of the supervisor daemon's process (VmRSS)",
        Unit::Bytes,
        resident,
    );
    registry.register_with_unit(
        "agent_supervisor_daemon_anon_memory",
        "Resident anonymous memory of the daemon's process (RssAnon: its heap and stacks, not its code)",
        Unit::Bytes,
        anon,
    );
    registry.register(
        "process_threads",
        "Threads of the daemon's process",
        threads,
    );
    registry.register(
        "process_open_fds",
        "Open file descriptors of the daemon's process",
        fds,
    );
    registry.register_with_unit(
        "process_cpu",
        "User and system CPU time of the daemon's process",
        Unit::Seconds,
        cpu,
    );
    registry.register_with_unit(
        "agent_supervisor_daemon_heap_in_use",
        "Bytes the daemon holds from malloc (glibc's mallinfo2: uordblks + hblkhd)",
        Unit::Bytes,
        heap_used,
    );
    registry.register_with_unit(
        "agent_supervisor_daemon_heap_free",
        "Bytes free in the daemon's malloc arena that glibc keeps (mallinfo2: fordblks)",
        Unit::Bytes,
        heap_free,
    );
}
