//! Names that are different in the file but one name where the system uses them: an
//! agent's `<AGENT>_ADDR` and a host's `<HOST>_IP` (upper case, `-` as `_`) and the names
//! of `/etc/hosts` (any case, one list for hosts, groups and agents). Two such names are
//! an error at the later one, naming the first.

use std::collections::HashMap;

use crate::load::Loaded;
use crate::report::Finding;
use crate::rules::err;

/// The name as `/etc/hosts` and the environment see it (names are letters, digits, `-`
/// and `_`: validate).
fn folded(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    Group,
    Agent,
}

/// What a name belongs to.
struct Owner {
    kind: Kind,
    /// `host pc2`, `group web`, `agent web:front`.
    label: String,
    field: String,
    /// The group of an agent, or the group itself.
    group: Option<String>,
}

/// Every name clash of the system's hosts, groups and agents.
pub fn check(l: &Loaded, out: &mut Vec<Finding>) {
    let mut owners: Vec<Owner> = Vec::new();
    for h in l.system.hosts.keys() {
        owners.push(Owner {
            kind: Kind::Host,
            label: format!("host {h}"),
            field: format!("hosts.{h}"),
            group: None,
        });
    }
    for g in l.system.groups.keys() {
        owners.push(Owner {
            kind: Kind::Group,
            label: format!("group {g}"),
            field: format!("groups.{g}"),
            group: Some(g.clone()),
        });
    }
    let mut names: Vec<&str> = l.system.hosts.keys().map(String::as_str).collect();
    names.extend(l.system.groups.keys().map(String::as_str));
    for (g, group) in &l.system.groups {
        for (i, a) in group.agents.iter().enumerate() {
            owners.push(Owner {
                kind: Kind::Agent,
                label: format!("agent {g}:{}", a.name),
                field: format!("groups.{g}.agents[{i}].name"),
                group: Some(g.clone()),
            });
            names.push(&a.name);
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let key = folded(name);
        let Some(&first) = seen.get(&key) else {
            seen.insert(key, i);
            continue;
        };
        let (a, b) = (&owners[first], &owners[i]);
        let exact = names[first] == *name;
        // The same agent name twice is validate's duplicate; an agent named like its own
        // group has the group's address, so /etc/hosts agrees with itself.
        if exact && (a.kind == b.kind || (a.group.is_some() && a.group == b.group)) {
            continue;
        }
        let why = if exact {
            format!("/etc/hosts would give the name {name} to both")
        } else {
            let var = match (a.kind, b.kind) {
                (Kind::Agent, Kind::Agent) => format!(" and in {key}_ADDR"),
                (Kind::Host, Kind::Host) => format!(" and in {key}_IP"),
                _ => String::new(),
            };
            format!("names that differ only in case or in - and _ are one name in /etc/hosts{var}")
        };
        out.push(err(
            l,
            "name-clash",
            &b.field,
            format!(
                "{} clashes with {} (at {}): {why}",
                b.label, a.label, a.field
            ),
        ));
    }
}
