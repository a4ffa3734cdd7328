//! An agent's output to the systemd journal too, when the daemon runs as a systemd service
//! (`$INVOCATION_ID` set, journald's socket there): each line a datagram of journald's native
//! protocol with the agent and its group as fields (`AGENT=`, `AGENT_GROUP=`,
//! `SYSLOG_IDENTIFIER=<agent>`, `PRIORITY=6` for stdout, `3` for stderr), so
//! `journalctl -u agent-supervisor AGENT=transcriber` shows one agent. journald files the line
//! under the service by the sender's cgroup (the agent's, inside the service's). The socket is
//! non-blocking: when journald is behind, lines go to the log file only.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// journald's native socket.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// A connected journald socket and the fields every line of one stream carries.
#[derive(Debug)]
pub struct Journal {
    sock: UnixDatagram,
    head: Vec<u8>,
}

impl Journal {
    /// The journal of agent `group:agent`'s stdout (or stderr), or `None` outside systemd.
    pub fn for_agent(group: &str, agent: &str, stderr: bool) -> Option<Journal> {
        std::env::var_os("INVOCATION_ID")?;
        Self::connect(Path::new(SOCKET), group, agent, stderr)
    }

    /// [`Journal::for_agent`] on the socket `path` (tests).
    pub fn connect(path: &Path, group: &str, agent: &str, stderr: bool) -> Option<Journal> {
        let sock = UnixDatagram::unbound().ok()?;
        sock.connect(path).ok()?;
        sock.set_nonblocking(true).ok()?;
        let head = format!(
            "SYSLOG_IDENTIFIER={agent}\nAGENT={agent}\nAGENT_GROUP={group}\nPRIORITY={}\n",
            if stderr { 3 } else { 6 }
        )
        .into_bytes();
        Some(Journal { sock, head })
    }

    /// Sends each line of `data` (`TIMESTAMP text\n` lines, as the log file gets them; the
    /// journal keeps its own time) as one entry.
    pub fn send_lines(&self, data: &[u8]) {
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let text = match line.iter().position(|&b| b == b' ') {
                Some(i) => &line[i + 1..],
                None => line,
            };
            let mut msg = Vec::with_capacity(self.head.len() + text.len() + 10);
            msg.extend_from_slice(&self.head);
            msg.extend_from_slice(b"MESSAGE=");
            msg.extend_from_slice(text);
            msg.push(b'\n');
            let _ = self.sock.send(&msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_an_entry_with_the_agent_fields() {
        let dir = std::env::temp_dir().join(format!("journal-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("socket");
        let server = UnixDatagram::bind(&path).expect("bind");
        let j = Journal::connect(&path, "audio", "transcriber", true).expect("connect");
        j.send_lines(b"2026-12-07T01:00:00.000Z hello world\n2026-12-07T01:00:00.001Z second\n");
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).expect("first");
        let first = String::from_utf8_lossy(&buf[..n]).to_string();
        assert_eq!(
            first,
            "SYSLOG_IDENTIFIER=transcriber\nAGENT=transcriber\nAGENT_GROUP=audio\nPRIORITY=3\nMESSAGE=hello world\n"
        );
        let n = server.recv(&mut buf).expect("second");
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("MESSAGE=second\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
