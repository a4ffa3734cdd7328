//! Starting launcher processes from the daemon's side: through the fork server
//! ([`crate::launch::server`], `agent-launch __spawner`) when one runs, else by exec'ing the
//! launcher binary. Either way the caller gets a [`Launched`]: its pid, the pipes it asked
//! for and a handle to wait for its end. A server found dead — by a request it cannot be sent
//! (that launch execs) or one it dropped unanswered (that launch fails: the server may have
//! forked the process, which the caller's cleanup kills with its cgroup) — is started again
//! by the next launch, at most once a second; launches within that second exec.
//!
//! Architecture Invariant: nothing here forks; the server is spawned like any program
//! (`Command`, no `pre_exec`) and talked to over a socket.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::launch::client::{receive, send, seqpacket_pair};
use crate::launch::server::{AGENT, GROUP_INIT, PING};

/// Which launch path to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `__group-init SPEC`: a group's namespaces, root and PID 1.
    GroupInit,
    /// `__agent SPEC`: one agent's shim.
    Agent,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::GroupInit => GROUP_INIT,
            Verb::Agent => AGENT,
        }
    }
}

/// What one of the launched process's standard descriptors is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// `/dev/null`.
    Null,
    /// A pipe to the caller ([`Launched::stdin`], `stdout`, `stderr`).
    Piped,
    /// The caller's own descriptor of the same number.
    Inherit,
}

/// A fork server, started again when it is found dead (at most once per [`REVIVE_EVERY`]).
/// Each request carries its own reply socket, so requests from several threads need no lock
/// but a read lock on the current server; dropping it closes the socket, which ends the
/// server (what it launched keeps running).
#[derive(Debug)]
pub struct Spawner {
    server: RwLock<Arc<Server>>,
    /// When a dead server was last replaced (or the replacement last failed).
    revived: Mutex<Option<Instant>>,
    launcher: PathBuf,
}

/// A dead server is started again at most this often; meanwhile launches exec.
pub const REVIVE_EVERY: Duration = Duration::from_secs(1);

/// One run of `launcher __spawner`.
#[derive(Debug)]
struct Server {
    /// `None` once dropped.
    sock: Option<OwnedFd>,
    child: Mutex<Child>,
    /// Set once a request failed at the socket: the server is gone.
    dead: AtomicBool,
}

impl Drop for Server {
    fn drop(&mut self) {
        // End of file on its socket ends the server; then it is reaped here.
        drop(self.sock.take());
        if let Ok(child) = self.child.get_mut() {
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Spawns `launcher __spawner` and checks it answers.
    fn start(launcher: &Path) -> std::io::Result<Server> {
        let (ours, theirs) = seqpacket_pair()?;
        let child = Command::new(launcher)
            .arg("__spawner")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let server = Server {
            sock: Some(ours),
            child: Mutex::new(child),
            dead: AtomicBool::new(false),
        };
        let (_, reply) = server.request_during(PING.as_bytes(), Vec::new(), || ())?;
        let (text, _) = reply?;
        if text != "pong" {
            return Err(std::io::Error::other(format!(
                "{} __spawner answered {text:?} to a ping",
                launcher.display()
            )));
        }
        Ok(server)
    }

    /// Sends one request, runs `during` while the server serves it, then reads the reply.
    /// `Err`: the request could not be sent (`during` did not run); else `during`'s result
    /// and the reply.
    #[allow(clippy::type_complexity)]
    fn request_during<R>(
        &self,
        payload: &[u8],
        fds: Vec<OwnedFd>,
        during: impl FnOnce() -> R,
    ) -> std::io::Result<(R, std::io::Result<(String, Option<OwnedFd>)>)> {
        let sock = match (&self.sock, self.dead.load(Ordering::Relaxed)) {
            (Some(s), false) => s.as_raw_fd(),
            _ => return Err(std::io::Error::other("the launch server has exited")),
        };
        // This request's own reply socket, passed last.
        let (mine, theirs) = seqpacket_pair()?;
        let mut all: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        all.push(theirs.as_raw_fd());
        if let Err(e) = send(sock, payload, &all) {
            self.dead.store(true, Ordering::Relaxed);
            return Err(e);
        }
        // Only the server holds them now: a launched process that dies, or a request that is
        // refused, closes the pipes, so writing a spec to one never blocks.
        drop(fds);
        drop(theirs);
        let r = during();
        let reply = receive(mine.as_raw_fd());
        if reply.is_err() {
            // The server dropped the request unanswered: it died meanwhile.
            self.dead.store(true, Ordering::Relaxed);
        }
        Ok((r, reply))
    }
}

impl Spawner {
    /// Spawns `launcher __spawner` and checks it answers.
    pub fn start(launcher: &Path) -> std::io::Result<Spawner> {
        Ok(Spawner {
            server: RwLock::new(Arc::new(Server::start(launcher)?)),
            revived: Mutex::new(None),
            launcher: launcher.to_path_buf(),
        })
    }

    /// The current server's pid.
    pub fn pid(&self) -> i32 {
        let server = self.current();
        let child = server.child.lock().unwrap_or_else(|p| p.into_inner());
        child.id() as i32
    }

    fn current(&self) -> Arc<Server> {
        Arc::clone(&self.server.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The server to send a request to: the current one, or, when it is dead, a new one
    /// (unless one was started less than [`REVIVE_EVERY`] ago: then the dead one, whose
    /// requests fail unsent, so the caller execs).
    fn live(&self) -> Arc<Server> {
        let server = self.current();
        if !server.dead.load(Ordering::Relaxed) {
            return server;
        }
        let mut revived = self.revived.lock().unwrap_or_else(|p| p.into_inner());
        let mut slot = self.server.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&slot, &server) {
            // Another thread replaced it meanwhile.
            return Arc::clone(&slot);
        }
        if revived.is_some_and(|t| t.elapsed() < REVIVE_EVERY) {
            return server;
        }
        *revived = Some(Instant::now());
        match Server::start(&self.launcher) {
            Ok(new) => {
                eprintln!(
                    "agent-supervisor: the launch server ({} __spawner) had exited: started a new one",
                    self.launcher.display()
                );
                *slot = Arc::new(new);
                Arc::clone(&slot)
            }
            Err(e) => {
                eprintln!(
                    "agent-supervisor: the launch server ({} __spawner) had exited and cannot be \
                     started again: {e}; exec'ing the launcher",
                    self.launcher.display()
                );
                server
            }
        }
    }

    /// Launches `req`, the three descriptors becoming its stdio, running `during`
    /// meanwhile. `Err`: nothing was sent (`during` did not run).
    #[allow(clippy::type_complexity)]
    fn launch_during<R>(
        &self,
        req: &Request<'_>,
        stdio: [OwnedFd; 3],
        during: impl FnOnce() -> R,
    ) -> std::io::Result<(R, std::io::Result<(i32, OwnedFd)>)> {
        let verb = req.verb;
        let mut payload = verb.as_str().as_bytes().to_vec();
        payload.push(0);
        payload.extend_from_slice(req.spec.as_os_str().as_bytes());
        payload.push(0);
        payload.extend_from_slice(req.label.as_bytes());
        let (r, reply) = self.live().request_during(&payload, stdio.into(), during)?;
        Ok((
            r,
            reply.and_then(|(text, fd)| self.launched(verb, &text, fd)),
        ))
    }

    /// Reads a launch reply: the pid and pidfd, or why the server refused.
    fn launched(
        &self,
        verb: Verb,
        text: &str,
        fd: Option<OwnedFd>,
    ) -> std::io::Result<(i32, OwnedFd)> {
        let refused = |why: &str| {
            std::io::Error::other(format!(
                "{} __spawner refused {}: {why}",
                self.launcher.display(),
                verb.as_str()
            ))
        };
        if let Some(why) = text.strip_prefix("error: ") {
            return Err(refused(why));
        }
        let pid = text
            .strip_prefix("ok ")
            .and_then(|p| p.parse::<i32>().ok())
            .ok_or_else(|| refused(&format!("unexpected reply {text:?}")))?;
        let fd = fd.ok_or_else(|| refused("no pidfd in the reply"))?;
        Ok((pid, fd))
    }
}

/// How to wait for a launched process's end.
#[derive(Debug)]
pub enum Proc {
    /// Exec'd by us: our child.
    Child(Child),
    /// Forked by the server (its child, which reaps it): a pidfd, readable once it exited.
    Forked(OwnedFd),
}

/// A launcher process that was started, with the pipes asked for.
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub proc: Proc,
}

/// The caller's end and the launched process's end of one standard descriptor.
struct End {
    ours: Option<File>,
    theirs: OwnedFd,
}

fn end(io: Io, number: RawFd, write_end_is_theirs: bool) -> std::io::Result<End> {
    match io {
        Io::Null => Ok(End {
            ours: None,
            theirs: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?
                .into(),
        }),
        Io::Inherit => Ok(End {
            ours: None,
            // SAFETY: the caller's own standard descriptor, open for the whole call.
            theirs: unsafe { BorrowedFd::borrow_raw(number) }.try_clone_to_owned()?,
        }),
        Io::Piped => {
            let (r, w) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
            let (ours, theirs) = if write_end_is_theirs { (r, w) } else { (w, r) };
            Ok(End {
                ours: Some(File::from(ours)),
                theirs,
            })
        }
    }
}

fn stdio(io: Io) -> Stdio {
    match io {
        Io::Null => Stdio::null(),
        Io::Piped => Stdio::piped(),
        Io::Inherit => Stdio::inherit(),
    }
}

/// What to launch.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub verb: Verb,
    /// The spec path the launched program reads.
    pub spec: &'a Path,
    /// Who it is for (`group` or `group:agent`), shown after the spec on its command line when
    /// the server forks it.
    pub label: &'a str,
    /// Its stdin, stdout and stderr.
    pub io: [Io; 3],
}

/// A launch that failed: why, and what `during` returned if it ran (so the caller can undo
/// what it made).
#[derive(Debug)]
pub struct Failed<R> {
    pub error: std::io::Error,
    pub during: Option<R>,
}

impl<R> From<std::io::Error> for Failed<R> {
    fn from(error: std::io::Error) -> Failed<R> {
        Failed {
            error,
            during: None,
        }
    }
}

impl Launched {
    /// Starts `req`: through `spawner` when there is one and it answers, else by exec'ing
    /// `launcher`; `during` runs while the process starts (given its stdin, when piped), so
    /// the caller's preparations overlap the fork or the exec. A launch through the server
    /// that fails once `during` ran is an error (no second try by exec), with `during`'s
    /// result.
    pub fn start_with<R>(
        launcher: &Path,
        spawner: Option<&Spawner>,
        req: Request<'_>,
        during: impl FnOnce(&mut Option<File>) -> R,
    ) -> Result<(Launched, R), Failed<R>> {
        let (verb, spec, io) = (req.verb, req.spec, req.io);
        let mut during = Some(during);
        if let Some(s) = spawner {
            match Self::forked(s, &req, &mut during) {
                Ok(Ok(launched)) => return Ok(launched),
                Ok(Err((error, r))) => {
                    return Err(Failed {
                        error,
                        during: Some(r),
                    })
                }
                // Nothing was sent: the server is gone (said once); exec from now on.
                Err(e) if during.is_some() => {
                    eprintln!("agent-supervisor: launch server: {e}; exec'ing the launcher instead")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut child = Command::new(launcher)
            .arg(verb.as_str())
            .arg(spec)
            .stdin(stdio(io[0]))
            .stdout(stdio(io[1]))
            .stderr(stdio(io[2]))
            .spawn()?;
        let mut l = Launched {
            pid: child.id() as i32,
            stdin: child.stdin.take().map(|p| File::from(OwnedFd::from(p))),
            stdout: child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
            stderr: child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
            proc: Proc::Child(child),
        };
        let during = during.take().expect("`during` runs once");
        let r = during(&mut l.stdin);
        Ok((l, r))
    }

    /// Through the server. `Err`: nothing was sent (`during` is still there); `Ok(Err)`: the
    /// launch failed after `during` ran, with its result.
    #[allow(clippy::type_complexity)]
    fn forked<R, F: FnOnce(&mut Option<File>) -> R>(
        s: &Spawner,
        req: &Request<'_>,
        during: &mut Option<F>,
    ) -> std::io::Result<Result<(Launched, R), (std::io::Error, R)>> {
        let io = req.io;
        let stdin = end(io[0], 0, false)?;
        let stdout = end(io[1], 1, true)?;
        let stderr = end(io[2], 2, true)?;
        let mut ours = stdin.ours;
        let (out, err) = (stdout.ours, stderr.ours);
        let stdio = [stdin.theirs, stdout.theirs, stderr.theirs];
        let (r, reply) = s.launch_during(req, stdio, || {
            let f = during.take().expect("`during` runs once");
            f(&mut ours)
        })?;
        let (pid, fd) = match reply {
            Ok(x) => x,
            Err(e) => return Ok(Err((e, r))),
        };
        Ok(Ok((
            Launched {
                pid,
                stdin: ours,
                stdout: out,
                stderr: err,
                proc: Proc::Forked(fd),
            },
            r,
        )))
    }

    /// A pidfd of the launched process when it is our child (to reap it later without
    /// holding the `Child`); `None` when the server reaps it.
    pub fn child_pidfd(&self) -> Option<OwnedFd> {
        match &self.proc {
            Proc::Child(_) => crate::launch::pidfd_open(self.pid).ok(),
            Proc::Forked(_) => None,
        }
    }

    /// Whether it has exited already (forked by the server, which may have reaped it, so its
    /// pid may name another process by now). Our own child cannot be reaped behind our back.
    pub fn exited(&self) -> bool {
        match &self.proc {
            Proc::Child(_) => false,
            Proc::Forked(fd) => crate::launch::wait_readable(fd, std::time::Duration::ZERO),
        }
    }

    /// Closes stdin, reads stdout and stderr to their end and waits for the exit. Returns
    /// (stdout, stderr).
    pub fn finish(mut self) -> (Vec<u8>, Vec<u8>) {
        drop(self.stdin.take());
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        self.wait();
        (out, err)
    }

    /// Waits for the exit (and reaps it when it is our child).
    pub fn wait(self) {
        match self.proc {
            Proc::Child(mut c) => {
                let _ = c.wait();
            }
            Proc::Forked(fd) => {
                while !crate::launch::wait_readable(&fd, std::time::Duration::from_secs(3600)) {}
            }
        }
    }
}
