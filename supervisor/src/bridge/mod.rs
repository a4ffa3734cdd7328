//! The host's end of the WireGuard bridge, in plain blocking steps (the daemon's bridge task
//! runs them on blocking threads):
//!
//! 1. [`read_key`]: the private key file, refused when others can read it, and checked
//!    against the configured public key.
//! 2. [`bring_up`]: the interface. Kernel WireGuard (`ip link add type wireguard` over
//!    rtnetlink) where the module is there and `implementation` allows it; else the
//!    userspace `agent-bridge` process, adopted when one from an earlier daemon still serves
//!    the interface, started in a process group of its own otherwise (it outlives the
//!    daemon, so tunnels survive a daemon's crash or restart).
//! 3. [`configure`]: keys, port and peers (skipped when the device has them already, so an
//!    adopted tunnel keeps its sessions), then the overlay address, MTU, link up and a route
//!    per peer: its overlay address and group subnet through the tunnel.
//! 4. [`read`]: what the device reports per peer, for `supervisorctl bridge` and `/metrics`.
//! 5. [`tear_down`]: on a full shutdown, the process is stopped and the interface removed.

pub mod ping;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_config::model::BridgeImplementation;
use agent_plan::BridgePlan;
use agent_wg::{uapi, DeviceConfig, DeviceStats, Key, PeerConfig};

use crate::launch::rtnl::{Rtnl, RtnlError};

/// The MTU of the tunnel: 1500 less WireGuard's 80 bytes of IPv6 + UDP + header overhead.
pub const MTU: u32 = 1420;
/// The userspace bridge binary, installed next to `agent-supervisor`.
pub const BRIDGE_BIN: &str = "agent-bridge";
/// Overrides where [`BRIDGE_BIN`] is found.
pub const BRIDGE_BIN_ENV: &str = "AGENT_SUPERVISOR_BRIDGE";
/// How long a started `agent-bridge` has to serve its socket.
const START_WAIT: Duration = Duration::from_secs(5);

/// What went wrong with the bridge; each names the file, interface or peer.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge: {0}")]
    Key(#[from] agent_wg::KeyError),
    #[error("bridge: hosts.{host}.bridge.public_key is {configured}, but the private key in {} belongs to public key {actual}", file.display())]
    KeyMismatch {
        host: String,
        file: PathBuf,
        configured: String,
        actual: String,
    },
    #[error("bridge interface {interface}: {source}")]
    Link {
        interface: String,
        #[source]
        source: RtnlError,
    },
    #[error("bridge interface {interface}: implementation: kernel, but this kernel has no WireGuard (modprobe wireguard), errno {errno}")]
    NoKernelWireGuard { interface: String, errno: i32 },
    #[error("bridge interface {interface}: cannot start {}: {source}", program.display())]
    Spawn {
        interface: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bridge interface {interface}: {} (pid {pid}) did not serve {} within {START_WAIT:?}; see {}", program.display(), socket.display(), log.display())]
    NotServing {
        interface: String,
        program: PathBuf,
        pid: u32,
        socket: PathBuf,
        log: PathBuf,
    },
    #[error("bridge: {0}")]
    Uapi(#[from] uapi::UapiError),
    #[error("bridge: {0}")]
    Kernel(#[from] agent_wg::kernel::KernelError),
    #[error("bridge peer {host}: endpoint {endpoint:?} does not resolve: {why}")]
    Endpoint {
        host: String,
        endpoint: String,
        why: String,
    },
    #[error("bridge: {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the private key and checks it belongs to the configured public key.
pub fn read_key(host: &str, plan: &BridgePlan) -> Result<Key, BridgeError> {
    let key = Key::read_private(&plan.private_key_file)?;
    if key.public() != plan.public_key {
        return Err(BridgeError::KeyMismatch {
            host: host.to_string(),
            file: plan.private_key_file.clone(),
            configured: plan.public_key.to_base64(),
            actual: key.public().to_base64(),
        });
    }
    Ok(key)
}

/// Which WireGuard carries the bridge, once it is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Kernel,
    /// The `agent-bridge` process.
    Userspace {
        pid: u32,
    },
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Kernel => "kernel",
            Device::Userspace { .. } => "userspace",
        }
    }
}

/// Where the `agent-bridge` binary is: `AGENT_SUPERVISOR_BRIDGE`, else next to this
/// executable, else `agent-bridge` on `PATH`.
pub fn bridge_program() -> PathBuf {
    if let Some(p) = std::env::var_os(BRIDGE_BIN_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .map(|me| me.with_file_name(BRIDGE_BIN))
        .ok()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(BRIDGE_BIN))
}

fn pid_file(run_dir: &Path) -> PathBuf {
    run_dir.join("bridge.pid")
}

fn link_err(interface: &str) -> impl FnOnce(RtnlError) -> BridgeError + '_ {
    move |source| BridgeError::Link {
        interface: interface.to_string(),
        source,
    }
}

/// The pid of a live `agent-bridge` recorded in `run_dir`, if it still runs.
fn recorded_bridge(run_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(run_dir))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    argv0.ends_with(BRIDGE_BIN.as_bytes()).then_some(pid)
}

/// Brings the interface up (kernel or userspace, see the module's steps); `log` is where a
/// started `agent-bridge` writes.
pub fn bring_up(plan: &BridgePlan, run_dir: &Path, log: &Path) -> Result<Device, BridgeError> {
    let ifname = plan.interface.as_str();
    let mut rtnl = Rtnl::open().map_err(link_err(ifname))?;
    let existing = rtnl.link_index(ifname).map_err(link_err(ifname))?;
    let userspace = recorded_bridge(run_dir);
    // An earlier daemon's device: the interface is there and, for userspace, its process
    // answers on the socket.
    // (Only the kind the plan allows: a kernel device left when `implementation: userspace`
    // is set now, or the other way round, is made anew.)
    let kernel_ok = plan.implementation != BridgeImplementation::Userspace;
    let userspace_ok = plan.implementation != BridgeImplementation::Kernel;
    if existing.is_some() {
        match userspace {
            Some(pid) if userspace_ok && uapi::get(&uapi::socket_path(ifname)).is_ok() => {
                return Ok(Device::Userspace { pid })
            }
            None if kernel_ok && agent_wg::kernel::get(ifname).is_ok() => {
                return Ok(Device::Kernel)
            }
            _ => {
                // Something else holds the name (a dead bridge's interface, or one of the
                // kind not wanted now): made anew.
                if let Some(pid) = userspace {
                    stop_process(pid);
                }
                if let Some(i) = existing {
                    let _ = rtnl.delete(ifname, i);
                }
            }
        }
    }
    if kernel_ok {
        match rtnl.ensure_link(ifname, "wireguard") {
            Ok(_) => return Ok(Device::Kernel),
            Err(RtnlError::Kernel { errno, .. })
                if plan.implementation == BridgeImplementation::Auto
                    && matches!(errno, libc::EOPNOTSUPP | libc::ENOENT | libc::EINVAL) => {}
            Err(RtnlError::Kernel { errno, .. })
                if matches!(errno, libc::EOPNOTSUPP | libc::ENOENT | libc::EINVAL) =>
            {
                return Err(BridgeError::NoKernelWireGuard {
                    interface: ifname.to_string(),
                    errno,
                })
            }
            Err(e) => return Err(link_err(ifname)(e)),
        }
    }
    start_userspace(plan, run_dir, log)
}

fn start_userspace(plan: &BridgePlan, run_dir: &Path, log: &Path) -> Result<Device, BridgeError> {
    use std::os::unix::process::CommandExt as _;
    let ifname = plan.interface.as_str();
    if let Some(old) = recorded_bridge(run_dir) {
        // Alive but not serving: stopped before a new one takes the name.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let program = bridge_program();
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BridgeError::Io { what, path, source }
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io("open", log))?;
    let err = out.try_clone().map_err(io("open", log))?;
    // A process group of its own (set by posix_spawn, no Rust code runs after the fork): a
    // terminal's ^C or a signal to the daemon's group does not reach it.
    let child = std::process::Command::new(&program)
        .arg(ifname)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|source| BridgeError::Spawn {
            interface: ifname.to_string(),
            program: program.clone(),
            source,
        })?;
    let pid = child.id();
    // Reaped by `reap` (the daemon's bridge task), or by init once the daemon is gone.
    drop(child);
    std::fs::write(pid_file(run_dir), format!("{pid}\n"))
        .map_err(io("write", &pid_file(run_dir)))?;
    let socket = uapi::socket_path(ifname);
    let deadline = Instant::now() + START_WAIT;
    while uapi::get(&socket).is_err() {
        if Instant::now() >= deadline || !alive(pid) {
            return Err(BridgeError::NotServing {
                interface: ifname.to_string(),
                program,
                pid,
                socket,
                log: log.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Device::Userspace { pid })
}

/// Whether process `pid` is alive (reaping it first when it is our exited child).
pub fn alive(pid: u32) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let p = nix::unistd::Pid::from_raw(pid as i32);
    match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => true,
        Ok(_) => false,
        // Not our child (adopted from an earlier daemon): ask the kernel.
        Err(_) => nix::sys::signal::kill(p, None).is_ok(),
    }
}

/// The device's wanted state: keys, port, and every peer with its endpoint resolved.
pub fn device_config(plan: &BridgePlan, key: Key) -> Result<DeviceConfig, BridgeError> {
    let mut peers = Vec::new();
    for p in &plan.peers {
        let endpoint: SocketAddr = p
            .endpoint
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            .map_err(|why| BridgeError::Endpoint {
                host: p.host.clone(),
                endpoint: p.endpoint.clone(),
                why,
            })?;
        peers.push(PeerConfig {
            public_key: p.public_key,
            endpoint: Some(endpoint),
            allowed_ips: p
                .allowed_ips()
                .into_iter()
                .map(|(ip, prefix)| (ip.into(), prefix))
                .collect(),
            persistent_keepalive: p.persistent_keepalive,
        });
    }
    Ok(DeviceConfig {
        private_key: key,
        listen_port: plan.listen_port,
        peers,
    })
}

/// Whether the device already is `want` (so setting it again would only drop sessions).
fn already(have: &DeviceStats, want: &DeviceConfig) -> bool {
    have.public_key == Some(want.private_key.public())
        && have.listen_port == want.listen_port
        && have.peers.len() == want.peers.len()
        && want.peers.iter().all(|w| {
            have.peers.iter().any(|h| {
                h.public_key == w.public_key
                    && h.persistent_keepalive == w.persistent_keepalive
                    && {
                        let mut a = h.allowed_ips.clone();
                        let mut b = w.allowed_ips.clone();
                        a.sort();
                        b.sort();
                        a == b
                    }
            })
        })
}

/// Configures the device, its address, MTU and routes (see the module's step 3).
pub fn configure(plan: &BridgePlan, device: Device, key: Key) -> Result<(), BridgeError> {
    let ifname = plan.interface.as_str();
    let want = device_config(plan, key)?;
    let have = read(plan, device)?;
    if !already(&have, &want) {
        match device {
            Device::Kernel => agent_wg::kernel::set(ifname, &want)?,
            Device::Userspace { .. } => uapi::set(&uapi::socket_path(ifname), &want)?,
        }
    }
    let mut rtnl = Rtnl::open().map_err(link_err(ifname))?;
    let index = rtnl
        .link_index(ifname)
        .map_err(link_err(ifname))?
        .ok_or_else(|| BridgeError::Link {
            interface: ifname.to_string(),
            source: RtnlError::Kernel {
                what: format!("link {ifname}"),
                errno: libc::ENODEV,
            },
        })?;
    rtnl.set_mtu(ifname, index, MTU).map_err(link_err(ifname))?;
    rtnl.add_address(ifname, index, plan.address, plan.prefix)
        .map_err(link_err(ifname))?;
    rtnl.set_up(ifname, index, None).map_err(link_err(ifname))?;
    for p in &plan.peers {
        rtnl.replace_route(ifname, p.subnet.base, p.subnet.prefix, index)
            .map_err(link_err(ifname))?;
    }
    // Forwarding between the tunnel and the group bridge.
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
    Ok(())
}

/// What the device reports.
pub fn read(plan: &BridgePlan, device: Device) -> Result<DeviceStats, BridgeError> {
    Ok(match device {
        Device::Kernel => agent_wg::kernel::get(&plan.interface)?,
        Device::Userspace { .. } => uapi::get(&uapi::socket_path(&plan.interface))?,
    })
}

/// SIGTERM to `agent-bridge` `pid` (it removes its socket), SIGKILL after 2 s.
fn stop_process(pid: u32) {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if alive(pid) {
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Stops the bridge of a daemon that stops every group: the process, the interface, the
/// socket and the pid file.
pub fn tear_down(interface: &str, run_dir: &Path) {
    if let Some(pid) = recorded_bridge(run_dir) {
        stop_process(pid);
    }
    let _ = crate::launch::rtnl::delete_link(interface);
    let _ = std::fs::remove_file(uapi::socket_path(interface));
    let _ = std::fs::remove_file(pid_file(run_dir));
}
