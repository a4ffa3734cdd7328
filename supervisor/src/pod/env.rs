//! The environment an agent starts with: defaults, the image's `Env`, the group's
//! `env_file` and `env`, the agent's `env` and the `AGENT_*` variables.

use agent_config::model::{Agent, Group};
use agent_config::scripts::agent_env;
use agent_config::Loaded;

use super::rootfs::image_env;
use super::PodError;

/// The environment of an agent, in order of precedence (later wins): PATH, HOME and
/// PYTHONUNBUFFERED defaults, the image's `Env`, the group's `env_file`, the group's `env`, the
/// agent's `env`, and the `AGENT_*` variables. The launcher and the OCI bundle both use it.
pub fn agent_environment(
    l: &Loaded,
    group: &str,
    g: &Group,
    agent: &Agent,
) -> Result<Vec<(String, String)>, PodError> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    let mut set = |k: String, v: String| {
        env.retain(|(x, _)| *x != k);
        env.push((k, v));
    };
    for (k, v) in image_env(l, g) {
        set(k, v);
    }
    if let Some(f) = &g.env_file {
        let path = l.resolve(f);
        let text = std::fs::read_to_string(&path).map_err(|e| PodError::EnvFile {
            group: group.to_string(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| PodError::EnvFile {
                group: group.to_string(),
                path: path.clone(),
                message: format!("line {}: expected KEY=VALUE", n + 1),
            })?;
            set(k.trim().to_string(), v.trim().to_string());
        }
    }
    for (k, v) in g.env.iter().chain(agent.env.iter()) {
        set(k.clone(), v.clone());
    }
    for (k, v) in agent_env(l, group, agent) {
        set(k, v);
    }
    // On the host image paths are host paths (the system file's directory is bound at the
    // same place); in a built image the default is the image's WorkingDir.
    Ok(env)
}
