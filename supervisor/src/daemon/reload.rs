//! `reload`: re-read the system file and apply only the difference — added, removed and
//! changed agents and groups; unchanged ones keep running (supervisord's reread + update).

use agent_config::Loaded;

use super::api::{ApiError, ReloadResult};
use super::core::Core;

/// A group's settings without its agents, for comparison.
fn group_key(l: &Loaded, g: &str) -> Option<String> {
    let mut group = l.system.groups.get(g)?.clone();
    group.agents.clear();
    serde_json::to_string(&group).ok()
}

fn agent_key(l: &Loaded, name: &str) -> Option<(String, String)> {
    l.system.groups.iter().find_map(|(gname, g)| {
        g.agents
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| serde_json::to_string(a).ok().map(|s| (gname.clone(), s)))
    })
}

/// Re-reads the system file the core was started with and applies the difference.
pub fn reload(core: &mut Core) -> Result<ReloadResult, ApiError> {
    let new = agent_config::load(&core.l.file).map_err(|e| {
        ApiError::bad_request(format!("reload refused, the system file has errors:\n{e}"))
    })?;
    if let Some(errors) = agent_config::validate::errors(&new) {
        return Err(ApiError::bad_request(format!(
            "reload refused, the system file has errors:\n{}",
            errors.join("\n")
        )));
    }
    let host = core.host.clone();
    let on_host = |l: &Loaded, g: &str| l.system.groups.get(g).is_some_and(|x| x.host == host);
    let old = core.l.clone();
    let mut result = ReloadResult::default();
    // Groups whose own settings changed (or that left this host) restart as a whole.
    let mut changed_groups = Vec::new();
    for g in core.group_names() {
        if !on_host(&new, &g) || group_key(&old, &g) != group_key(&new, &g) {
            changed_groups.push(g);
        }
    }
    let old_agents = core.agent_names();
    // Removed agents are stopped while the old configuration (their stop signal and
    // timeout) is still in place; changed ones restart with the new one.
    let mut restart = Vec::new();
    for name in &old_agents {
        let before = agent_key(&old, name);
        let after = agent_key(&new, name).filter(|(g, _)| on_host(&new, g));
        match (before, after) {
            (_, None) => {
                core.remove_agent(name);
                result.removed.push(name.clone());
            }
            (Some((g1, a1)), Some((g2, a2)))
                if g1 == g2 && a1 == a2 && !changed_groups.contains(&g1) =>
            {
                result.unchanged += 1;
            }
            (_, Some(_)) => {
                restart.push(name.clone());
                result.changed.push(name.clone());
            }
        }
    }
    core.set_config(new.clone());
    for name in &restart {
        core.restart_agent(name);
    }
    for g in &changed_groups {
        core.retire_group(g);
    }
    for name in core.agent_names() {
        if !old_agents.contains(&name) {
            result.added.push(name);
        }
    }
    core.collect_retired();
    Ok(result)
}
