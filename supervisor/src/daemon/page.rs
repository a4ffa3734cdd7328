//! The status page at `/`: every host, group and agent of a [`HealthSummary`] as one HTML
//! document rendered on the server (no script, no external asset: it works offline and in
//! any browser), which reloads itself every [`REFRESH_SECONDS`].

use std::fmt::Write as _;

use super::api::{AgentState, Health};
use super::fleet::{HealthSummary, HostSummary};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 5;

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bytes(b: Option<u64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}

fn state_class(state: AgentState, health: Health) -> &'static str {
    match (state, health) {
        (AgentState::Running, Health::Unhealthy) => "bad",
        (AgentState::Running, _) => "good",
        (AgentState::Starting | AgentState::Stopping | AgentState::Backoff, _) => "warn",
        _ => "bad",
    }
}

fn host_section(out: &mut String, h: &HostSummary) {
    let (class, word) = match (h.up, h.stale) {
        (true, _) => ("good", "up"),
        (false, _) => ("bad", "DOWN"),
    };
    let _ = write!(
        out,
        "<section class=\"host\" id=\"host-{id}\"><h2>{name} <span class=\"{class}\">{word}</span> \
         <small>{role} · {healthy}/{agents} agents healthy</small></h2>",
        id = esc(&h.host),
        name = esc(&h.host),
        role = esc(&h.role),
        healthy = h.agents_healthy,
        agents = h.agents,
    );
    if let Some(e) = &h.error {
        let _ = write!(
            out,
            "<p class=\"bad\">{}{}</p>",
            esc(e),
            if h.stale && h.agents > 0 {
                " (last known state below)"
            } else {
                ""
            }
        );
    }
    if let Some(b) = &h.bridge {
        let _ = write!(
            out,
            "<p>bridge {} ({}) {}</p><table><tr><th>peer</th><th>endpoint</th><th>handshake</th><th>rtt</th><th>up</th></tr>",
            esc(&b.interface),
            esc(b.implementation.as_deref().unwrap_or("down")),
            esc(&b.address)
        );
        for p in &b.peers {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&p.host),
                esc(p.endpoint.as_deref().unwrap_or("-")),
                p.handshake_age_seconds
                    .map_or("never".into(), |a| format!("{a:.0} s ago")),
                p.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
                if p.up { "good" } else { "bad" },
                if p.up { "yes" } else { "no" }
            );
        }
        out.push_str("</table>");
    }
    out.push_str(
        "<table><tr><th>group</th><th>agent</th><th>state</th><th>health</th><th>restarts</th>\
         <th>memory</th><th>last exit</th></tr>",
    );
    for g in &h.groups {
        let mem = match g.memory_limit_bytes {
            Some(_) => format!(
                "{} of {}",
                bytes(g.memory_usage_bytes),
                bytes(g.memory_limit_bytes)
            ),
            None => bytes(g.memory_usage_bytes),
        };
        let _ = write!(
            out,
            "<tr class=\"group\"><td colspan=\"5\">{}{}</td><td>{}</td><td></td></tr>",
            esc(&g.group),
            g.address
                .as_ref()
                .map_or(String::new(), |a| format!(" <small>{}</small>", esc(a))),
            esc(&mem)
        );
        for a in &g.agents {
            let _ = write!(
                out,
                "<tr class=\"agent\" data-agent=\"{name}\"><td></td><td>{name}</td><td class=\"{class}\">{state}</td>\
                 <td>{health}</td><td>{restarts}</td><td>{mem}</td><td>{exit}</td></tr>",
                name = esc(&a.agent),
                class = state_class(a.state, a.health),
                state = a.state.as_str(),
                health = a.health.as_str(),
                restarts = a.restarts,
                mem = bytes(a.memory_bytes),
                exit = exit_cell(a),
            );
        }
    }
    out.push_str("</table></section>");
}

/// The last exit cell: the exit, and a line when the agent's shim lost log output.
fn exit_cell(a: &super::fleet::AgentSummary) -> String {
    let exit = esc(a.last_exit.as_deref().unwrap_or("-"));
    if a.log_dropped_bytes == 0 {
        return exit;
    }
    let why = a
        .log_error
        .as_deref()
        .map_or(String::new(), |e| format!(" ({})", esc(e)));
    format!(
        "{exit}<br><small class=\"bad\">logs dropped: {}{why}</small>",
        bytes(Some(a.log_dropped_bytes))
    )
}

/// The whole page.
pub fn status_page(s: &HealthSummary) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>agent-supervisor: {status}</title><style>\
         body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
         td,th{{padding:.15em .8em;text-align:left;border-bottom:1px solid #ddd}}\
         tr.group td{{font-weight:bold;background:#f4f4f4}}\
         .good{{color:#137333}}.warn{{color:#b06000}}.bad{{color:#c5221f;font-weight:bold}}\
         small{{color:#666;font-weight:normal}}</style></head><body>\
         <h1>agent-supervisor <span id=\"status\" class=\"{class}\">{status}</span></h1>\
         <p id=\"counts\">{up}/{hosts} hosts up · {healthy}/{agents} agents healthy · \
         refreshes every {REFRESH_SECONDS} s</p>",
        status = esc(&s.status),
        class = match s.status.as_str() {
            "ok" => "good",
            "degraded" => "warn",
            _ => "bad",
        },
        up = s.hosts_up,
        hosts = s.hosts.len(),
        healthy = s.agents_healthy,
        agents = s.agents,
    );
    for h in &s.hosts {
        host_section(&mut out, h);
    }
    out.push_str("</body></html>\n");
    out
}
