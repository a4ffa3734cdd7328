//! `agent-supervisor up`: the daemon in the foreground with a live status view — a table of
//! the agents, printed again whenever a state or health changes.

use std::time::Duration;

use tokio::sync::mpsc::Sender;

use crate::daemon::api::{ControlMsg, Request, Response, Snapshot};

/// Renders a snapshot as an aligned table (the same columns as `supervisorctl status`).
pub fn table(s: &Snapshot) -> String {
    let rows: Vec<[String; 6]> = s
        .agents
        .iter()
        .map(|a| {
            [
                format!("{}:{}", a.group, a.agent),
                a.state.as_str().to_string(),
                a.health.as_str().to_string(),
                a.pid.map_or("-".into(), |p| p.to_string()),
                a.restarts.to_string(),
                a.last_exit.as_ref().map_or("-".into(), |l| l.to_string()),
            ]
        })
        .collect();
    let header = ["AGENT", "STATE", "HEALTH", "PID", "RESTARTS", "LAST EXIT"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |r: &[String; 6]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| format!("{c:w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(&header);
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// Polls the core and prints the table whenever an agent's state or health changed.
pub async fn live_view(ctl: Sender<ControlMsg>) {
    let mut last = String::new();
    loop {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if ctl
            .send(ControlMsg {
                request: Request::Status { targets: vec![] },
                reply,
            })
            .await
            .is_err()
        {
            return;
        }
        if let Ok(Ok(Response::Status { snapshot })) = answer.await {
            let key: String = snapshot
                .agents
                .iter()
                .map(|a| {
                    format!(
                        "{}{}{}{:?}",
                        a.agent,
                        a.state.as_str(),
                        a.health.as_str(),
                        a.pid
                    )
                })
                .collect();
            if key != last {
                last = key;
                let running = snapshot
                    .agents
                    .iter()
                    .filter(|a| a.state == crate::daemon::api::AgentState::Running)
                    .count();
                crate::cli_out::print_or_drop(&format!(
                    "\n{} agents, {running} running\n{}",
                    snapshot.agents.len(),
                    table(&snapshot)
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
