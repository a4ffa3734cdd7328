//! supervisord as a contender of `bench supervise`: a generated `supervisord.conf` (one
//! `[program:aN]` per agent, `autorestart=true`, `startsecs` as given), `supervisord -c CONF`
//! in the foreground, its state read over XML-RPC on its Unix socket (a tiny blocking client:
//! `supervisorctl` is a Python process per call, too slow to poll every 10 ms), and
//! `supervisorctl stop all` + `shutdown` to stop it, as a user would.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::supervise::{AgentView, Peer};
use super::supervise_ours::connect_if_listening;
use super::supervise_procs::{self as procs, which, Agents};

/// supervisord's programs, found on `PATH` or in the system directories.
pub struct Installed {
    pub supervisord: PathBuf,
    pub supervisorctl: PathBuf,
    /// `supervisord --version`.
    pub version: String,
}

/// Finds supervisord; `Err` says how to install it.
pub fn installed() -> Result<Installed, String> {
    let missing = "not installed (apt-get install supervisor)".to_string();
    let supervisord = which("supervisord").ok_or_else(|| missing.clone())?;
    let supervisorctl = which("supervisorctl").ok_or(missing)?;
    let version = Command::new(&supervisord)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok(Installed {
        supervisord,
        supervisorctl,
        version,
    })
}

/// One supervisord instance for the benchmark's agents.
pub struct Supervisord {
    agents: Agents,
    bin: PathBuf,
    ctl: PathBuf,
    conf: PathBuf,
    socket: PathBuf,
    out: PathBuf,
    child: Option<Child>,
}

impl Supervisord {
    /// Writes `supervisord-startsecsN.conf` into the agents' directory.
    pub fn new(agents: &Agents, inst: &Installed, startsecs: u32) -> Result<Supervisord, String> {
        let dir = &agents.dir;
        let tag = format!("sv{startsecs}");
        let socket = dir.join(format!("{tag}.sock"));
        let logs = dir.join(format!("{tag}-logs"));
        std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
        let conf = dir.join(format!("supervisord-startsecs{startsecs}.conf"));
        let text = conf_text(agents, &socket, &logs, &dir.join(&tag), startsecs);
        std::fs::write(&conf, text).map_err(|e| format!("write {}: {e}", conf.display()))?;
        Ok(Supervisord {
            agents: agents.clone(),
            bin: inst.supervisord.clone(),
            ctl: inst.supervisorctl.clone(),
            out: dir.join(format!("{tag}.out")),
            conf,
            socket,
            child: None,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "supervisord output: {}",
            lines[lines.len().saturating_sub(5)..].join(" / ")
        )
    }

    /// One XML-RPC call; `Ok(None)` while nothing listens yet.
    fn rpc(&self, method: &str, params: &[&str]) -> Result<Option<String>, String> {
        xmlrpc(&self.socket, method, params)
    }
}

/// One XML-RPC call to the supervisord listening on `socket`; `Ok(None)` while nothing
/// listens yet.
pub fn xmlrpc(socket: &Path, method: &str, params: &[&str]) -> Result<Option<String>, String> {
    let Some(mut s) = connect_if_listening(socket)? else {
        return Ok(None);
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let params: String = params
        .iter()
        .map(|p| format!("<param><value><string>{p}</string></value></param>"))
        .collect();
    let body = format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName>\
         <params>{params}</params></methodCall>"
    );
    let req = format!(
        "POST /RPC2 HTTP/1.0\r\nHost: localhost\r\nContent-Type: text/xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send {method} to {}: {e}", socket.display()))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read the answer to {method}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method}: not an HTTP answer: {text:?}"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{method}: {}", head.lines().next().unwrap_or(head)));
    }
    if body.contains("<fault>") {
        return Err(format!("{method}: fault: {}", compact(body)));
    }
    Ok(Some(body.to_string()))
}

/// The configuration: the control socket, logs and pid file in the benchmark's directory.
fn conf_text(agents: &Agents, socket: &Path, logs: &Path, base: &Path, startsecs: u32) -> String {
    let mut c = format!(
        "[unix_http_server]\nfile={sock}\nchmod=0700\n\n\
         [supervisord]\nnodaemon=true\nuser=root\nlogfile={base}.log\npidfile={base}.pid\n\
         childlogdir={logs}\n\n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{sock}\n\n",
        sock = socket.display(),
        base = base.display(),
        logs = logs.display(),
    );
    for i in 0..agents.len() {
        let name = &agents.names[i];
        c.push_str(&format!(
            "[program:{name}]\ncommand={}\ndirectory={}\nautostart=true\nautorestart=true\n\
             startsecs={startsecs}\nstopsignal=TERM\nstopwaitsecs=10\n\
             environment=PYTHONUNBUFFERED=\"1\",AGENT_NAME=\"{name}\",AGENT_PORT=\"{}\"\n\
             stdout_logfile={logs}/{name}.stdout.log\nstderr_logfile={logs}/{name}.stderr.log\n\n",
            agents.argv(i).join(" "),
            agents.dir.display(),
            agents.ports[i],
            logs = logs.display(),
        ));
    }
    c
}

/// The XML-RPC answer on one line, for messages.
fn compact(xml: &str) -> String {
    xml.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of a `<value>`: `<string>x</string>`, `<int>1</int>` or bare `x`.
fn value_text(v: &str) -> String {
    let v = v.trim();
    if v.starts_with('<') && v.ends_with("/>") {
        return String::new();
    }
    match (v.find('>'), v.rfind('<')) {
        (Some(open), Some(close)) if v.starts_with('<') && close > open => {
            v[open + 1..close].to_string()
        }
        _ => v.to_string(),
    }
}

/// The `name`, `statename` and `pid` of each `<struct>` of `getAllProcessInfo` or
/// `getProcessInfo`.
pub fn process_infos(xml: &str) -> Vec<AgentView> {
    let mut out = Vec::new();
    for st in xml.split("<struct>").skip(1) {
        let st = st.split("</struct>").next().unwrap_or(st);
        let (mut name, mut state, mut pid) = (String::new(), String::new(), 0i32);
        for m in st.split("<member>").skip(1) {
            let key = m
                .split_once("<name>")
                .and_then(|(_, r)| r.split_once("</name>"))
                .map(|(k, _)| k.trim());
            let val = m
                .split_once("<value>")
                .and_then(|(_, r)| r.rsplit_once("</value>"))
                .map(|(v, _)| value_text(v))
                .unwrap_or_default();
            match key {
                Some("name") => name = val,
                Some("statename") => state = val,
                Some("pid") => pid = val.parse().unwrap_or(0),
                _ => {}
            }
        }
        out.push(AgentView {
            name,
            running: state == "RUNNING",
            pid: (pid > 0).then_some(pid),
        });
    }
    out
}

impl Peer for Supervisord {
    fn start(&mut self) -> Result<i32, String> {
        let out = std::fs::File::create(&self.out)
            .map_err(|e| format!("create {}: {e}", self.out.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("dup {}: {e}", self.out.display()))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("run {}: {e}", self.bin.display()))?;
        let pid = child.id() as i32;
        self.child = Some(child);
        Ok(pid)
    }

    fn states(&mut self) -> Result<Vec<AgentView>, String> {
        Ok(self
            .rpc("supervisor.getAllProcessInfo", &[])
            .map_err(|e| format!("{e} ({})", self.log_tail()))?
            .map(|x| process_infos(&x))
            .unwrap_or_default())
    }

    fn agent(&mut self, name: &str) -> Result<Option<AgentView>, String> {
        Ok(self
            .rpc("supervisor.getProcessInfo", &[name])?
            .and_then(|x| process_infos(&x).into_iter().next()))
    }

    fn stop_all(&mut self) -> Result<(), String> {
        for verb in ["stop", "shutdown"] {
            let mut cmd = Command::new(&self.ctl);
            cmd.arg("-c").arg(&self.conf).arg(verb);
            if verb == "stop" {
                cmd.arg("all");
            }
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("run {} {verb}: {e}", self.ctl.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "supervisorctl {verb} failed ({}): {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }

    fn exited(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(format!(
                "supervisord exited ({status}); {}",
                self.log_tail()
            )),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for supervisord: {e}")),
        }
    }

    fn helpers(&self) -> Vec<i32> {
        Vec::new()
    }

    fn no_helpers(&self) -> Option<&'static str> {
        Some("none (agents are its children; it pipes their logs itself)")
    }

    fn teardown(&mut self) -> Vec<String> {
        procs::end(self.child.take(), &self.agents)
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.teardown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_infos_reads_python_xmlrpc() {
        let xml = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n\
            <value><struct>\n<member>\n<name>name</name>\n<value><string>a1</string></value>\n</member>\n\
            <member>\n<name>pid</name>\n<value><int>4242</int></value>\n</member>\n\
            <member>\n<name>statename</name>\n<value><string>RUNNING</string></value>\n</member>\n\
            <member>\n<name>spawnerr</name>\n<value><string></string></value>\n</member>\n\
            </struct></value>\n<value><struct>\n<member>\n<name>name</name>\n<value><string>a2</string></value>\n</member>\n\
            <member>\n<name>pid</name>\n<value><int>0</int></value>\n</member>\n\
            <member>\n<name>statename</name>\n<value><string>STARTING</string></value>\n</member>\n\
            </struct></value>\n</data></array></value>\n</param>\n</params>\n</methodResponse>\n";
        let v = process_infos(xml);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].name.as_str(), v[0].running, v[0].pid),
            ("a1", true, Some(4242))
        );
        assert_eq!(
            (v[1].name.as_str(), v[1].running, v[1].pid),
            ("a2", false, None)
        );
    }
}
