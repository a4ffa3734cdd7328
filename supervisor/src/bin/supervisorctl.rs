//! `supervisorctl`: the control client of the agent-supervisor daemon.
//!
//! The daemon and its control socket arrive with the supervision work; until then every
//! command but `version` reports that no daemon answers on the socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "supervisorctl",
    version,
    about = "Control the agent-supervisor daemon"
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(long, short = 's', default_value = agent_config::defaults::CONTROL_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the client's version and the daemon's, if one answers.
    Version,
    /// Show agents' state.
    Status {
        /// Agents (`NAME`) or groups (`GROUP:*`).
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Version => {
            println!("supervisorctl {}", agent_supervisor::VERSION);
            match request(&cli.socket, "GET", "/v1/version") {
                Ok(body) => println!("daemon {body}"),
                Err(e) => println!("daemon: {e}"),
            }
            ExitCode::SUCCESS
        }
        Cmd::Status { names } => match request(
            &cli.socket,
            "GET",
            &format!("/v1/status?names={}", names.join(",")),
        ) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("supervisorctl: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// One HTTP/1.1 request over the control socket; returns the body.
fn request(socket: &PathBuf, method: &str, path: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            format!(
                "the agent-supervisor daemon is not running (no listener on {}: {e})",
                socket.display()
            )
        }
        std::io::ErrorKind::PermissionDenied => {
            format!(
                "permission denied on {}: run as root or as a member of the daemon's control_group",
                socket.display()
            )
        }
        _ => format!("cannot connect to {}: {e}", socket.display()),
    })?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: agent-supervisor\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send to {}: {e}", socket.display()))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("cannot read from {}: {e}", socket.display()))?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(body.trim().to_string())
}
