//! The environment of an agent, merged once from every source in order of precedence.

use agent_config::model::Group;

use crate::DEFAULT_PATH;

/// An ordered environment where a later value of a name replaces the earlier value (and
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

    /// Sets each pair in turn, a later value of a name replacing the earlier one and moving
    /// it to the end, in one pass: a system's thousands of
    /// `<AGENT>_ADDR` names cost a hash set, not one scan of the whole list per name.
    pub fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, it: I) {
        let incoming: Vec<(String, String)> = it.into_iter().collect();
        if incoming.is_empty() {
            return;
        }
        // The last value of each name wins, at the place of its last `set`.
        let mut last = std::collections::HashMap::with_capacity(incoming.len());
        for (i, (k, _)) in incoming.iter().enumerate() {
            last.insert(k.as_str(), i);
        }
        let keep: Vec<bool> = (0..incoming.len())
            .map(|i| last.get(incoming[i].0.as_str()) == Some(&i))
            .collect();
        self.0.retain(|(k, _)| !last.contains_key(k.as_str()));
        drop(last);
        self.0.extend(
            incoming
                .into_iter()
                .zip(keep)
                .filter_map(|(kv, keep)| keep.then_some(kv)),
        );
    }
}

/// The group's base environment: defaults, the image's `Env` (`KEY=VALUE` strings), the
/// `env_file` variables (already parsed) and the group's `env`. The system's names
/// (`<HOST>_IP`, `<AGENT>_ADDR`, `OBSERVABILITY_ENDPOINT`) are not in it: each agent plan
/// shares them (`AgentPlan::system_names`).
pub fn group_base(image_env: &[String], env_file: Vec<(String, String)>, g: &Group) -> Env {
    let mut env = Env::defaults();
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

    fn own((k, v): (&str, &str)) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn later_sources_win_and_move_last() {
        let mut e = Env::defaults();
        e.extend([("HOME", "/home/a")].map(own));
        e.extend([("X", "1")].map(own));
        e.extend([("X", "2")].map(own));
        let names: Vec<&str> = e.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "PYTHONUNBUFFERED", "HOME", "X"]);
        assert_eq!(e.0[3].1, "2");
    }

    #[test]
    fn extend_is_set_in_turn() {
        let pairs = [
            ("X", "1"),
            ("HOME", "/h"),
            ("Y", "2"),
            ("X", "3"),
            ("Y", "4"),
            ("Z", "5"),
        ];
        let mut one = Env::defaults();
        for kv in pairs {
            one.extend([own(kv)]);
        }
        let mut batch = Env::defaults();
        batch.extend(pairs.map(own));
        assert_eq!(one, batch);
        let names: Vec<&str> = batch.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "PYTHONUNBUFFERED", "HOME", "X", "Y", "Z"]);
    }
}
