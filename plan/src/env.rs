//! The environment of an agent, merged once from every source in order of precedence.

use agent_config::model::Group;

use crate::DEFAULT_PATH;

/// An ordered environment where a later `set` of a name replaces the earlier value (and
/// moves it to the end, as the sources are applied in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env(pub Vec<(String, String)>);

impl Env {
    /// The variables every agent starts with: `PATH`, `HOME`, `PYTHONUNBUFFERED`.
    pub fn defaults() -> Env {
        Env(vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("HOME".into(), "/root".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
        ])
    }

    pub fn set(&mut self, k: impl Into<String>, v: impl Into<String>) {
        let k = k.into();
        self.0.retain(|(x, _)| *x != k);
        self.0.push((k, v.into()));
    }

    pub fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, it: I) {
        for (k, v) in it {
            self.set(k, v);
        }
    }
}

/// The group's base environment: defaults, the system's names (`<HOST>_IP`,
/// `<AGENT>_ADDR`, `OBSERVABILITY_ENDPOINT`), the image's `Env` (`KEY=VALUE` strings), the
/// `env_file` variables (already parsed) and the group's `env`.
pub fn group_base(
    system: &[(String, String)],
    image_env: &[String],
    env_file: Vec<(String, String)>,
    g: &Group,
) -> Env {
    let mut env = Env::defaults();
    env.extend(system.iter().cloned());
    env.extend(image_env.iter().filter_map(|kv| {
        kv.split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
    }));
    env.extend(env_file);
    env.extend(g.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Parses an `env_file` with [`agent_config::envfile`] (`KEY=VALUE` lines, blank lines and
/// `#` comments skipped; the rules `check` applies). Errors carry the 1-based line.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    use agent_config::envfile::{parse_str, EnvFileError};
    parse_str(std::path::Path::new(""), text).map_err(|e| match e {
        EnvFileError::Line { line, message, .. } => (line, message),
        other => (0, other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_win_and_move_last() {
        let mut e = Env::defaults();
        e.set("HOME", "/home/a");
        e.set("X", "1");
        e.set("X", "2");
        let names: Vec<&str> = e.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "PYTHONUNBUFFERED", "HOME", "X"]);
        assert_eq!(e.0[3].1, "2");
    }
}
