//! `reload`: re-read the system file, resolve the host's new plan and apply exactly
//! [`agent_plan::diff`] of the old and the new plan — added, removed and changed agents and
//! groups; unchanged ones keep running (supervisord's reread + update). A changed `env_file`
//! content, a rebuilt image (new digest) or a changed default reaches the agents it affects,
//! since the plan holds the values, not the text that produced them.
//!
//! [`resolve`] reads files and the image store: the core runs it on a blocking thread and
//! [`apply`]s its plan when it comes back.

use std::path::Path;

use agent_plan::HostPlan;

use super::api::{ApiError, ReloadResult};
use super::core::Core;

/// Loads, validates and resolves the system file for `host`; every error refuses the reload.
pub fn resolve(file: &Path, host: &str) -> Result<HostPlan, ApiError> {
    let refused = |e: String| {
        ApiError::bad_request(format!(
            "reload refused, the system file {} has errors:\n{e}",
            file.display()
        ))
    };
    let new = agent_config::load(file).map_err(|e| refused(e.to_string()))?;
    if let Some(errors) = agent_config::validate::errors(&new) {
        return Err(refused(errors.join("\n")));
    }
    super::resolve_plan(&new, host).map_err(|e| refused(e.to_string()))
}

/// Applies the difference between the core's plan and `plan`.
pub fn apply(core: &mut Core, plan: HostPlan) -> ReloadResult {
    let d = agent_plan::diff(&core.plan, &plan);
    let mut result = ReloadResult {
        unchanged: d.unchanged_agents.len(),
        ..ReloadResult::default()
    };
    // Removed agents stop with the stop signal and timeout their run was started with;
    // changed ones restart with the new plan.
    for name in &d.removed_agents {
        core.remove_agent(name);
        result.removed.push(name.clone());
    }
    let retire: Vec<String> = d
        .changed_groups
        .iter()
        .chain(d.removed_groups.iter())
        .cloned()
        .collect();
    let (netfilter, renamed) = (
        (d.netfilter || d.bridge).then(|| plan.clone()),
        d.renamed_groups.clone(),
    );
    if d.bridge {
        core.replan_bridge(plan.bridge.clone());
    }
    if d.fleet {
        core.replan_fleet(plan.fleet.clone());
    }
    core.set_plan(plan);
    // The kernel's rules and the hosts files of running groups: off the core task.
    let run_dir = core.plan.daemon.run_dir.clone();
    let hosts: Vec<agent_plan::GroupPlan> = renamed
        .iter()
        .filter_map(|g| core.plan.groups.get(g).cloned())
        .collect();
    if netfilter.is_some() || !hosts.is_empty() {
        tokio::task::spawn_blocking(move || {
            if let Some(p) = netfilter {
                if let Err(e) = crate::netfilter::sync(&p) {
                    eprintln!("agent-supervisor: reload: {e}");
                }
            }
            for g in &hosts {
                if let Err(e) = crate::pod::rewrite_hosts(&run_dir, g) {
                    eprintln!("agent-supervisor: reload: group {}: {e}", g.name);
                }
            }
        });
    }
    for name in &d.restarted_agents {
        core.restart_agent(name);
        result.changed.push(name.clone());
    }
    for g in &retire {
        core.retire_group(g);
    }
    result.added = d.added_agents.clone();
    if !d.daemon_settings.is_empty() {
        eprintln!(
            "agent-supervisor: reload: changed daemon settings take effect when the daemon restarts: {}",
            d.daemon_settings.join(", ")
        );
    }
    core.collect_retired();
    result
}
