//! The test bed of `agent-bench bridge`: two network namespaces joined by a veth pair, and
//! WireGuard tunnels between them (agent-bridge or wireguard-go at either end), all of it
//! removed again by [`Lab::teardown`] or, on any early return, by the guard's `Drop`.
//!
//! Every name carries this process's id: the namespaces `abench-PID-a` and `-b`, the
//! interfaces `abPIDxN` (hex pid, 15 characters at most). The configuration sockets of the
//! userspace daemons live in the host's `/var/run/wireguard`, shared by every namespace, so
//! the two ends of a tunnel have different interface names. Keys are generated with
//! `wg genkey` into a directory of mode 0700, as files of mode 0600.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The MTU of the tunnel interfaces: 1500 less WireGuard's 80 bytes of IPv6 + UDP + header.
pub const TUNNEL_MTU: u32 = 1420;
/// The underlay: 10.231.0.1 in namespace a, 10.231.0.2 in namespace b.
pub const UNDERLAY: [&str; 2] = ["10.231.0.1", "10.231.0.2"];
/// Where the userspace daemons serve their configuration sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// How long a daemon may take to show its interface and socket, and to stop.
const DAEMON_WAIT: Duration = Duration::from_secs(5);

/// One end of a tunnel: the userspace WireGuard implementation it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `agent-bridge IFNAME`, the workspace's gotatun daemon.
    AgentBridge,
    /// `wireguard-go IFNAME`, in the foreground (`WG_PROCESS_FOREGROUND=1`).
    WireguardGo,
}

impl End {
    pub fn name(self) -> &'static str {
        match self {
            End::AgentBridge => "agent-bridge",
            End::WireguardGo => "wireguard-go",
        }
    }
}

/// The programs the lab runs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: PathBuf,
    pub wg: PathBuf,
    pub agent_bridge: Result<PathBuf, String>,
    pub wireguard_go: Result<PathBuf, String>,
}

/// A userspace WireGuard daemon the lab started.
struct Daemon {
    what: String,
    child: Child,
}

/// Two namespaces, the veth between them, the tunnels' daemons, the key directory.
pub struct Lab {
    tools: Tools,
    tag: String,
    pub ns: [String; 2],
    made_ns: Vec<String>,
    dir: Option<PathBuf>,
    daemons: Vec<Daemon>,
    ifaces: Vec<String>,
}

/// The text of a command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with `stdin` as its input; returns its stdout, or an error naming the command
/// with its exit status and stderr.
pub fn output(mut cmd: Command, stdin: Option<&[u8]>) -> Result<String, String> {
    let line = describe(&cmd);
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{line}`: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .map_err(|e| format!("cannot write to `{line}`: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for `{line}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Sends SIGTERM to `child`, waits up to `wait` for it, then kills it; says what happened
/// when it did not stop on its own.
pub fn stop_child(child: &mut Child, wait: Duration) -> Option<String> {
    if let Ok(Some(_)) = child.try_wait() {
        return None;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let until = Instant::now() + wait;
    while Instant::now() < until {
        match child.try_wait() {
            Ok(Some(_)) => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Some(format!("cannot wait for pid {}: {e}", child.id())),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(format!(
        "pid {} ignored SIGTERM for {wait:?} and was killed",
        child.id()
    ))
}

/// Whether the process `pid` sees the interface `iface` (its namespace's `/proc/net/dev`).
fn sees_interface(pid: u32, iface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/dev")).is_ok_and(|dev| {
        dev.lines().any(|l| {
            l.trim_start()
                .strip_prefix(iface)
                .is_some_and(|r| r.starts_with(':'))
        })
    })
}

/// The tail of a daemon's log file, on one line.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        "(it printed nothing)".into()
    } else {
        tail
    }
}

impl Lab {
    /// The namespaces with the veth pair between them (10.231.0.1/24 and .2/24, up), and a
    /// private key directory. On error, what was made is removed again (by `Drop`).
    pub fn new(tools: Tools) -> Result<Lab, String> {
        let pid = std::process::id();
        let tag = format!("ab{pid:x}");
        let mut lab = Lab {
            tools,
            ns: [format!("abench-{pid}-a"), format!("abench-{pid}-b")],
            tag,
            made_ns: Vec::new(),
            dir: None,
            daemons: Vec::new(),
            ifaces: Vec::new(),
        };
        let dir = std::env::temp_dir().join(format!("abench-{pid}-bridge"));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create the key directory {}: {e}", dir.display()))?;
        lab.dir = Some(dir);
        for ns in lab.ns.clone() {
            lab.ip(&["netns", "add", &ns])?;
            lab.made_ns.push(ns.clone());
            lab.ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let [a, b] = lab.ns.clone();
        let veth = lab.veth();
        lab.ip(&[
            "-n", &a, "link", "add", &veth, "type", "veth", "peer", "name", &veth, "netns", &b,
        ])?;
        for (ns, addr) in [(&a, UNDERLAY[0]), (&b, UNDERLAY[1])] {
            lab.ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", &veth])?;
            lab.ip(&["-n", ns, "link", "set", &veth, "up"])?;
        }
        Ok(lab)
    }

    /// The veth's name, the same at both ends (each in its own namespace).
    pub fn veth(&self) -> String {
        format!("{}v", self.tag)
    }

    /// `ip ARGS`, failing with the command line and its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(&self.tools.ip);
        c.args(args);
        output(c, None)
    }

    /// `ip netns exec NS PROGRAM`, not yet run.
    pub fn in_ns(&self, side: usize, program: &Path) -> Command {
        let mut c = Command::new(&self.tools.ip);
        c.args(["netns", "exec", &self.ns[side]]).arg(program);
        c
    }

    fn dir(&self) -> Result<&Path, String> {
        self.dir
            .as_deref()
            .ok_or_else(|| "the key directory is gone".to_string())
    }

    /// A new private key in `NAME.key` (mode 0600) and its public key.
    fn keypair(&self, name: &str) -> Result<(PathBuf, String), String> {
        let mut genkey = Command::new(&self.tools.wg);
        genkey.arg("genkey");
        let private = output(genkey, None)?;
        let file = self.dir()?.join(format!("{name}.key"));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .and_then(|mut f| f.write_all(private.as_bytes()))
            .map_err(|e| format!("cannot write the key file {}: {e}", file.display()))?;
        let mut c = Command::new(&self.tools.wg);
        c.arg("pubkey");
        let public = output(c, Some(private.as_bytes()))?;
        Ok((file, public.trim().to_string()))
    }

    /// Starts `end`'s daemon for `iface` in namespace `side` and waits until its interface
    /// and its configuration socket are there.
    fn start_daemon(&mut self, end: End, side: usize, iface: &str) -> Result<(), String> {
        let exe = match end {
            End::AgentBridge => self.tools.agent_bridge.clone()?,
            End::WireguardGo => self.tools.wireguard_go.clone()?,
        };
        let log = self.dir()?.join(format!("{iface}.log"));
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create the log {}: {e}", log.display()))?;
        let err = file
            .try_clone()
            .map_err(|e| format!("cannot share the log {}: {e}", log.display()))?;
        let mut cmd = self.in_ns(side, &exe);
        cmd.arg(iface)
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let what = format!("`{}` in {}", describe(&cmd), self.ns[side]);
        // The socket may outlive a daemon that was killed: it is ours to remove either way.
        self.ifaces.push(iface.to_string());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let pid = child.id();
        self.daemons.push(Daemon {
            what: what.clone(),
            child,
        });
        let socket = Path::new(SOCKET_DIR).join(format!("{iface}.sock"));
        let until = Instant::now() + DAEMON_WAIT;
        loop {
            if let Some(d) = self.daemons.last_mut() {
                if let Ok(Some(status)) = d.child.try_wait() {
                    return Err(format!("{what} exited ({status}): {}", log_tail(&log)));
                }
            }
            if socket.exists() && sees_interface(pid, iface) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "{what}: no interface {iface} with a socket {} after {DAEMON_WAIT:?}: {}",
                    socket.display(),
                    log_tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A tunnel between the namespaces, number `n`, `ends[0]` in namespace a and `ends[1]`
    /// in b: 10.232.0.(4n+1)/30 and .(4n+2)/30 on interfaces of MTU 1420, each end's peer
    /// the other's underlay address, allowed-ips the other's tunnel address. Returns the
    /// tunnel address of the end in b.
    pub fn tunnel(&mut self, n: u8, ends: [End; 2]) -> Result<String, String> {
        let addr = |side: u8| format!("10.232.0.{}", 4 * n + 1 + side);
        let ifaces = [format!("{}t{n}a", self.tag), format!("{}t{n}b", self.tag)];
        let port = |side: usize| (51820 + 10 * u16::from(n) + side as u16).to_string();
        let mut keys = Vec::new();
        for side in 0..2 {
            self.start_daemon(ends[side], side, &ifaces[side])?;
            keys.push(self.keypair(&ifaces[side])?);
        }
        for side in 0..2 {
            let other = 1 - side;
            let mut wg = self.in_ns(side, &self.tools.wg);
            wg.args(["set", &ifaces[side], "private-key"])
                .arg(&keys[side].0)
                .args(["listen-port", &port(side), "peer", &keys[other].1])
                .args(["endpoint", &format!("{}:{}", UNDERLAY[other], port(other))])
                .args(["allowed-ips", &format!("{}/32", addr(other as u8))]);
            output(wg, None).map_err(|e| format!("in {}: {e}", self.ns[side]))?;
            let (ns, iface) = (&self.ns[side], &ifaces[side]);
            let mtu = TUNNEL_MTU.to_string();
            let cidr = format!("{}/30", addr(side as u8));
            self.ip(&["-n", ns, "addr", "add", &cidr, "dev", iface])?;
            self.ip(&["-n", ns, "link", "set", iface, "mtu", &mtu, "up"])?;
        }
        Ok(addr(1))
    }

    /// Stops the daemons (SIGTERM, then SIGKILL), removes their sockets, the namespaces
    /// (and with them every interface) and the key directory. Returns what went wrong or
    /// was left behind; running it again does nothing.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for mut d in self.daemons.drain(..) {
            if let Some(why) = stop_child(&mut d.child, DAEMON_WAIT) {
                notes.push(format!("{}: {why}", d.what));
            }
        }
        for iface in self.ifaces.drain(..) {
            let socket = Path::new(SOCKET_DIR).join(format!("{iface}.sock"));
            if socket.exists() {
                if let Err(e) = std::fs::remove_file(&socket) {
                    notes.push(format!("cannot remove {}: {e}", socket.display()));
                }
            }
        }
        for ns in std::mem::take(&mut self.made_ns) {
            let mut c = Command::new(&self.tools.ip);
            c.args(["netns", "del", &ns]);
            if let Err(e) = output(c, None) {
                notes.push(e);
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                notes.push(format!("cannot remove {}: {e}", dir.display()));
            }
        }
        notes
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.teardown() {
            eprintln!("agent-bench bridge: cleanup: {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_commands_and_reports_failures_by_name() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo oops >&2; exit 3"]);
        assert_eq!(describe(&c), "sh -c echo oops >&2; exit 3");
        let e = output(c, None).expect_err("exit 3");
        assert!(e.starts_with("`sh -c echo oops >&2; exit 3` failed"), "{e}");
        assert!(e.ends_with(": oops"), "{e}");
        let mut cat = Command::new("cat");
        cat.arg("-");
        assert_eq!(output(cat, Some(b"key\n")).expect("cat"), "key\n");
    }

    #[test]
    fn stops_a_child_with_sigterm() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep");
        assert_eq!(stop_child(&mut child, Duration::from_secs(5)), None);
        assert!(child.try_wait().expect("wait").is_some());
    }

    #[test]
    fn sees_its_own_loopback() {
        assert!(sees_interface(std::process::id(), "lo"));
        assert!(!sees_interface(std::process::id(), "no-such-if0"));
    }
}
