//! `agent-bridge INTERFACE`: the userspace WireGuard end of the bridge between hosts. It
//! creates the TUN interface `INTERFACE` with a gotatun device behind it and serves the
//! configuration protocol at `/var/run/wireguard/INTERFACE.sock` (so `wg show INTERFACE`
//! works), then runs until SIGTERM or SIGINT, or until the interface is deleted.
//!
//! The daemon starts it in a session of its own and configures it through the socket; it is
//! not a child that dies with the daemon, so tunnels (and the TCP connections through them)
//! outlive a daemon's crash or restart. It holds no keys on disk: a new process waits for
//! the daemon to configure it.

use gotatun::device::uapi::UapiServer;
use gotatun::device::DeviceBuilder;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

fn usage() -> ExitCode {
    eprintln!("usage: agent-bridge INTERFACE  (1-15 characters: letters, digits, `-`, `_`, `.`)");
    ExitCode::from(2)
}

fn valid_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name] = args.as_slice() else {
        return usage();
    };
    if !valid_name(name) {
        return usage();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-bridge {name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(name)) {
        Ok(why) => {
            eprintln!("agent-bridge {name}: stopped ({why})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agent-bridge {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(name: &str) -> Result<&'static str, String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let uapi = UapiServer::default_unix_socket(name, None, None)
        .map_err(|e| format!("cannot serve the configuration socket: {e}"))?;
    let mut device = DeviceBuilder::new()
        .with_default_udp()
        .create_tun(name)
        .map_err(|e| format!("cannot create the TUN interface (is /dev/net/tun there?): {e}"))?
        .with_uapi(uapi)
        .build()
        .await
        .map_err(|e| format!("cannot start the WireGuard device: {e}"))?;
    eprintln!("agent-bridge {name}: ready (pid {})", std::process::id());
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = device.wait() => "the interface is gone",
    };
    device.stop().await;
    let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
    Ok(why)
}
