//! What `reload` asks of the core: forget removed agents, restart changed ones, retire
//! groups whose settings changed, take the new configuration.

use super::{stop_pod, Core, Event};
use crate::daemon::api::LastExit;

impl Core {
    // --- used by reload ---

    /// Stops and forgets an agent (reload removed it).
    pub(in crate::daemon) fn remove_agent(&mut self, name: &str) {
        self.begin_stop(name, LastExit::StoppedByUser, false, false);
        if let Some(a) = self.agents.get(name) {
            if !a.is_live() {
                self.agents.shift_remove(name);
            } else if let Some(a) = self.agents.get_mut(name) {
                a.desired = false;
            }
        }
    }

    /// Restarts an agent with its new configuration (reload changed it).
    pub(in crate::daemon) fn restart_agent(&mut self, name: &str) {
        self.begin_stop(name, LastExit::StoppedByUser, true, false);
    }

    /// Marks a group to be torn down once its agents stopped.
    pub(in crate::daemon) fn retire_group(&mut self, name: &str) {
        if let Some(g) = self.groups.get_mut(name) {
            g.retire = true;
        }
    }

    pub(in crate::daemon) fn set_plan(&mut self, plan: agent_plan::HostPlan) {
        self.plan = plan;
        self.sync_config();
    }

    /// Forgets stopped agents that are no longer configured; tears down retired pods whose
    /// agents all stopped and lets changed groups start afresh.
    pub(in crate::daemon) fn collect_retired(&mut self) {
        self.retiring = false;
        let configured: Vec<String> = self.plan.agents().map(|(_, a)| a.name.clone()).collect();
        self.agents
            .retain(|n, a| configured.contains(n) || a.is_live());
        // Removed agents still stopping: look again after the next event.
        if self.agents.keys().any(|n| !configured.contains(n)) {
            self.retiring = true;
        }
        let names: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.retire)
            .map(|(n, _)| n.clone())
            .collect();
        for gname in names {
            if self
                .agents
                .values()
                .any(|a| a.group == gname && a.is_live())
            {
                self.retiring = true;
                continue;
            }
            let Some(g) = self.groups.get_mut(&gname) else {
                continue;
            };
            g.retire = false;
            match g.pod.take() {
                // Torn down off the core task; the group starts afresh once it is gone.
                Some(pod) => {
                    g.stopping = true;
                    let tx = self.tx.clone();
                    tokio::task::spawn_blocking(move || {
                        stop_pod(&gname, &pod);
                        let _ = tx.send(Event::GroupStopped { group: gname });
                    });
                }
                None if !self.plan.groups.contains_key(&gname) => {
                    self.groups.remove(&gname);
                }
                None => {}
            }
        }
    }
}
