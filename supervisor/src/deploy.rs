//! `agent-supervisor deploy FILE [--hosts a,b] [--ssh-config FILE]` (the seed's
//! `deploy-mainpc.sh` and `deploy-pc2.sh` as one command): from this machine, over OpenSSH
//! (the user's keys and `~/.ssh/config`, or `-F FILE`; `BatchMode`, so nothing prompts),
//! host by host in dependency order:
//!
//! 1. a staging tree: the binaries next to this one and the system file's directory (agent
//!    code, env files, recipes), without the *other* hosts' private bridge keys;
//! 2. `tar` of it through `ssh HOST` into `/tmp/agent-supervisor-deploy-<host>` there;
//! 3. `ssh HOST .../agent-supervisor install --config ... --host H` (see `install.rs`: the
//!    first time it starts the service, later it restarts or reloads only when something
//!    changed, so a changed agent is the only one restarted);
//!
//! with a line of progress per host and a table at the end. A host that fails stops the
//! rollout there, with its error; the hosts after it are left as they were. Hosts are ordered
//! so that a host whose groups others depend on (`depends_on` across hosts) comes first;
//! otherwise the system file's order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use agent_config::Loaded;

/// Where a host receives the staging tree.
pub fn remote_dir(host: &str) -> String {
    format!("/tmp/agent-supervisor-deploy-{host}")
}

/// One host's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Deployed {
        seconds: f64,
        what: String,
    },
    Failed {
        seconds: f64,
        error: String,
    },
    /// Not tried: an earlier host failed.
    Skipped,
}

/// The hosts to deploy, in dependency order.
pub fn order(l: &Loaded, only: Option<&[String]>) -> Result<Vec<String>, String> {
    if let Some(only) = only {
        if let Some(bad) = only.iter().find(|h| !l.system.hosts.contains_key(*h)) {
            let known: Vec<&str> = l.system.hosts.keys().map(String::as_str).collect();
            return Err(format!(
                "--hosts: {bad:?} is not a host of {} (hosts: {})",
                l.file.display(),
                known.join(", ")
            ));
        }
    }
    let all: Vec<String> = l.system.hosts.keys().cloned().collect();
    // host -> hosts it depends on.
    let needs = |h: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for g in l.system.groups.values().filter(|g| g.host == h) {
            for dep in g.depends_on.0.keys() {
                if let Some(d) = l.system.groups.get(dep) {
                    if d.host != h {
                        out.insert(d.host.clone());
                    }
                }
            }
        }
        out
    };
    let mut done: Vec<String> = Vec::new();
    while done.len() < all.len() {
        // The first host (file order) whose dependencies are done; on a cycle, the first left.
        let next = all
            .iter()
            .filter(|h| !done.contains(h))
            .find(|h| needs(h).iter().all(|d| done.contains(d)))
            .or_else(|| all.iter().find(|h| !done.contains(h)))
            .cloned();
        match next {
            Some(h) => done.push(h),
            None => break,
        }
    }
    Ok(done
        .into_iter()
        .filter(|h| only.is_none_or(|o| o.contains(h)))
        .collect())
}

fn copy_tree(from: &Path, to: &Path, leave_out: &[PathBuf]) -> Result<(), String> {
    const SKIP: &[&str] = &[".git", "target", "run", "state", "logs", "__pycache__"];
    std::fs::create_dir_all(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    for e in std::fs::read_dir(from).map_err(|e| format!("read {}: {e}", from.display()))? {
        let e = e.map_err(|e| format!("read {}: {e}", from.display()))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if SKIP.iter().any(|s| e.file_name() == *s) {
            continue;
        }
        let canon = std::fs::canonicalize(&src).unwrap_or_else(|_| src.clone());
        if leave_out.contains(&canon) {
            continue;
        }
        let meta = std::fs::metadata(&src).map_err(|e| format!("stat {}: {e}", src.display()))?;
        if meta.is_dir() {
            copy_tree(&src, &dst, leave_out)?;
        } else if meta.is_file() {
            std::fs::copy(&src, &dst)
                .map_err(|e| format!("copy {} to {}: {e}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// The staging tree for `host` in `dir`: `bin/` and `sys/`.
fn stage(l: &Loaded, host: &str, dir: &Path) -> Result<(), String> {
    let here = std::env::current_exe().map_err(|e| format!("find this binary: {e}"))?;
    let from = here.parent().unwrap_or(Path::new("."));
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("create {}: {e}", bin.display()))?;
    for b in crate::install::BINARIES {
        std::fs::copy(from.join(b), bin.join(b))
            .map_err(|e| format!("copy {}: {e}", from.join(b).display()))?;
    }
    // Every other host's private key stays here.
    let others: Vec<PathBuf> = l
        .system
        .hosts
        .iter()
        .filter(|(h, _)| *h != host)
        .filter_map(|(_, h)| h.bridge.as_ref()?.private_key_file.as_ref())
        .map(|p| {
            let p = l.resolve(p);
            std::fs::canonicalize(&p).unwrap_or(p)
        })
        .collect();
    copy_tree(&l.dir, &dir.join("sys"), &others)
}

fn ssh(ssh_config: Option<&Path>, address: &str) -> Command {
    let mut c = Command::new("ssh");
    if let Some(f) = ssh_config {
        c.arg("-F").arg(f);
    }
    c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", address]);
    c
}

fn deploy_host(l: &Loaded, host: &str, ssh_config: Option<&Path>) -> Result<String, String> {
    let address = &l.system.hosts[host].address;
    let local = std::env::temp_dir().join(format!(
        "agent-supervisor-stage-{host}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&local);
    let staged = stage(l, host, &local);
    let result = staged.and_then(|()| {
        let remote = remote_dir(host);
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&local)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tar: {e}"))?;
        let out = ssh(ssh_config, address)
            .arg(format!(
                "rm -rf {remote} && mkdir -p {remote} && tar -C {remote} -xf -"
            ))
            .stdin(tar.stdout.take().ok_or("tar: no output")?)
            .output()
            .map_err(|e| format!("ssh {address}: {e}"))?;
        let _ = tar.wait();
        if !out.status.success() {
            return Err(format!(
                "copy to {address} over ssh failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let file = l
            .file
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_else(|| "system.yaml".into());
        let out = ssh(ssh_config, address)
            .arg(format!(
                "{remote}/bin/agent-supervisor install --config {remote}/sys/{file} --host {host} && rm -rf {remote}"
            ))
            .output()
            .map_err(|e| format!("ssh {address}: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            return Err(format!(
                "install on {address} failed ({}): {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(text)
    });
    let _ = std::fs::remove_dir_all(&local);
    result
}

/// Deploys `hosts` (all when `None`); prints progress on stderr; returns each host's outcome.
pub fn run(
    l: &Loaded,
    hosts: Option<&[String]>,
    ssh_config: Option<&Path>,
) -> Result<Vec<(String, Outcome)>, String> {
    if let Some(errors) = agent_config::validate::errors(l) {
        return Err(format!(
            "{} has errors; nothing was deployed:\n{}",
            l.file.display(),
            errors.join("\n")
        ));
    }
    let order = order(l, hosts)?;
    let mut out = Vec::new();
    let mut failed = false;
    for host in order {
        if failed {
            out.push((host, Outcome::Skipped));
            continue;
        }
        eprintln!("deploy: {host} ({}) ...", l.system.hosts[&host].address);
        let t = Instant::now();
        let r = deploy_host(l, &host, ssh_config);
        let seconds = t.elapsed().as_secs_f64();
        match r {
            Ok(text) => {
                let what = text.lines().last().unwrap_or("installed").to_string();
                eprintln!("deploy: {host}: done in {seconds:.1} s: {what}");
                out.push((host, Outcome::Deployed { seconds, what }));
            }
            Err(error) => {
                eprintln!("deploy: {host}: FAILED after {seconds:.1} s: {error}");
                failed = true;
                out.push((host, Outcome::Failed { seconds, error }));
            }
        }
    }
    Ok(out)
}

/// The final table.
pub fn table(rows: &[(String, Outcome)]) -> String {
    let w = rows.iter().map(|(h, _)| h.len()).max().unwrap_or(4).max(4);
    let mut s = format!("| {:w$} | result   | seconds | detail\n", "host");
    for (h, o) in rows {
        let (r, secs, d) = match o {
            Outcome::Deployed { seconds, what } => {
                ("deployed", format!("{seconds:.1}"), what.clone())
            }
            Outcome::Failed { seconds, error } => {
                ("FAILED", format!("{seconds:.1}"), error.clone())
            }
            Outcome::Skipped => (
                "skipped",
                "-".into(),
                "not tried: an earlier host failed".into(),
            ),
        };
        s.push_str(&format!("| {h:w$} | {r:8} | {secs:>7} | {d}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_others_depend_on_goes_first() {
        let dir = std::env::temp_dir().join(format!("deploy-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let f = dir.join("system.yaml");
        std::fs::write(
            &f,
            "hosts:\n  pc2: {address: 10.0.0.2, role: secondary}\n  mainpc: {address: 10.0.0.1, role: primary}\n\
             groups:\n  front:\n    host: pc2\n    depends_on: [core]\n    agents:\n      - {name: f, command: /bin/true}\n  \
             core:\n    host: mainpc\n    agents:\n      - {name: c, command: /bin/true}\n",
        )
        .unwrap_or_default();
        let l = agent_config::load(&f).expect("loads");
        assert_eq!(order(&l, None).expect("order"), ["mainpc", "pc2"]);
        assert_eq!(
            order(&l, Some(&["pc2".to_string()])).expect("order"),
            ["pc2"]
        );
        let e = order(&l, Some(&["pc3".to_string()])).expect_err("unknown host");
        assert!(
            e.contains("\"pc3\" is not a host") && e.contains("pc2, mainpc"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
