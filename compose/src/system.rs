//! The whole import: compose files to hosts, services to groups (joined when asked), and the
//! system file's text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agent_config::tree::Tree;

use crate::emit::{comment, key, q, Out};
use crate::recipe::flow;
use crate::service::{self, sanitize, valid_name, Ctx, GroupPlan};
use crate::values::interpolate;
use crate::yaml::{entries, get, is_null, key_text, leading_comments, line, map_scalars};
use crate::{Error, HostArg, Imported, Note, Options};

/// The host name a compose file gives when no `--host` names it: `docker-compose.pc2.yml`
/// → `pc2`, else `main`.
fn host_from_file(p: &Path) -> String {
    let stem = p
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let inner = stem
        .trim_end_matches(".yml")
        .trim_end_matches(".yaml")
        .trim_start_matches("docker-compose")
        .trim_start_matches("compose")
        .trim_matches(|c| c == '.' || c == '-' || c == '_');
    if inner.is_empty() || !valid_name(inner) {
        "main".into()
    } else {
        inner.to_string()
    }
}

/// Reads a `.env` file: `KEY=VALUE` lines, `#` comments, quotes stripped.
fn dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

struct Placed {
    host: String,
    plan: GroupPlan,
    file: PathBuf,
}

pub fn import(
    files: &[(PathBuf, String)],
    read: &dyn Fn(&Path) -> Option<String>,
    opts: &Options,
) -> Result<Imported, Error> {
    if files.is_empty() {
        return Err(Error::NoFiles);
    }
    let names: Vec<&String> = opts
        .hosts
        .iter()
        .filter_map(|h| match h {
            HostArg::Name(n) => Some(n),
            _ => None,
        })
        .collect();
    if names.len() > files.len() {
        return Err(Error::Hosts(format!(
            "{} host names for {} compose files (one --host NAME per file, in order)",
            names.len(),
            files.len()
        )));
    }
    for h in &opts.hosts {
        let n = match h {
            HostArg::Name(n) | HostArg::Services(n, _) => n,
        };
        if !valid_name(n) {
            return Err(Error::Hosts(format!(
                "{n:?} is not a host name (letters, digits, - and _, at most 63)"
            )));
        }
    }
    let out_dir = service::normalize(opts.output.parent().unwrap_or(Path::new(".")));
    let mut notes: Vec<Note> = Vec::new();
    let mut out_files: Vec<(PathBuf, String)> = Vec::new();
    let mut placed: Vec<Placed> = Vec::new();
    let mut host_order: Vec<String> = Vec::new();
    let push_host = |h: &str, order: &mut Vec<String>| {
        if !order.iter().any(|x| x == h) {
            order.push(h.to_string());
        }
    };
    for (fi, (path, text)) in files.iter().enumerate() {
        let mut tree = Tree::parse(text).map_err(|e| Error::Syntax {
            file: path.clone(),
            line: e.at.line,
            column: e.at.column,
            message: e.message.clone(),
        })?;
        for i in &tree.issues {
            notes.push(Note {
                file: path.clone(),
                line: i.at.line,
                message: format!("{}: {}", i.path, i.message),
            });
        }
        let dir = service::normalize(path.parent().unwrap_or(Path::new(".")));
        // Interpolation: the environment over `.env`.
        let dot = read(&dir.join(".env"))
            .map(|t| dotenv(&t))
            .unwrap_or_default();
        let vars = |n: &str| {
            opts.env
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| dot.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
        };
        if let Some(root) = tree.root.as_mut() {
            map_scalars(root, &mut |s, l| {
                if s.contains('$') {
                    let (v, issues) = interpolate(s, &vars);
                    for m in issues {
                        notes.push(Note {
                            file: path.clone(),
                            line: l,
                            message: format!("interpolation: {m}"),
                        });
                    }
                    *s = v;
                    return true;
                }
                false
            });
        }
        let Some(root) = tree.root.as_ref() else {
            notes.push(Note {
                file: path.clone(),
                line: 0,
                message: "the file is empty".into(),
            });
            continue;
        };
        let Some(top) = entries(root) else {
            return Err(Error::Shape {
                file: path.clone(),
                message: "expected a mapping at the top (services: ...)".into(),
            });
        };
        let file_host = names.get(fi).map(|s| s.to_string()).unwrap_or_else(|| {
            if names.is_empty() {
                host_from_file(path)
            } else {
                names[0].clone()
            }
        });
        let mut cx = Ctx {
            file: path,
            dir: dir.clone(),
            out_dir: out_dir.clone(),
            lines: text.lines().collect(),
            read,
            notes: Vec::new(),
            files: Vec::new(),
        };
        for e in &top {
            let k = key_text(e);
            let l = line(&e.key);
            match k.as_str() {
                "services" => {}
                "version" => cx.note(l, "version: obsolete in Compose; ignored"),
                "name" => cx.note(
                    l,
                    "name: the project name is not carried (groups are named after services)",
                ),
                "networks" => {
                    for n in entries(&e.value).unwrap_or_default() {
                        if !is_null(&n.value) && entries(&n.value).is_some_and(|x| !x.is_empty()) {
                            cx.note(line(&n.key), format!("networks.{}: its driver and options are not carried; services on it get network: private (the host's group bridge, 10.88.<n>.0/24 by default)", key_text(n)));
                        }
                    }
                }
                "volumes" => {
                    for n in entries(&e.value).unwrap_or_default() {
                        if !is_null(&n.value) && entries(&n.value).is_some_and(|x| !x.is_empty()) {
                            cx.note(line(&n.key), format!("volumes.{}: its driver and options are not carried; the volume is a directory under {}/volumes", key_text(n), agent_config::defaults::STATE_DIR));
                        }
                    }
                }
                "secrets" | "configs" => {
                    cx.note(l, format!("{k}: not carried; bind the files with volumes"))
                }
                "include" => cx.note(
                    l,
                    "include: not carried; name the included files on the command line",
                ),
                other if other.starts_with("x-") => cx.note(
                    l,
                    format!(
                        "{other}: extension, not carried (anchors in it are expanded where used)"
                    ),
                ),
                other => cx.note(
                    l,
                    format!("{other}: unknown top-level Compose key, not carried"),
                ),
            }
        }
        let Some(services) = get(root, "services") else {
            cx.note(0, "no services");
            notes.extend(cx.notes.into_iter().map(|(file, line, message)| Note {
                file,
                line,
                message,
            }));
            continue;
        };
        for e in entries(services).unwrap_or_default() {
            let name = key_text(e);
            let above = leading_comments(&cx.lines, line(&e.key));
            let Some(plan) = service::plan(&name, line(&e.key), &e.value, above, &mut cx) else {
                continue;
            };
            let mut host = file_host.clone();
            for h in &opts.hosts {
                if let HostArg::Services(n, svcs) = h {
                    if svcs.contains(&name) {
                        host = n.clone();
                    }
                }
            }
            if let Some(x) = &plan.x_host {
                if valid_name(x) {
                    host = x.clone();
                } else {
                    cx.note(
                        plan.line,
                        format!(
                            "services.{name}.x-agent-supervisor.host: {x:?} is not a host name"
                        ),
                    );
                }
            }
            placed.push(Placed {
                host,
                plan,
                file: path.clone(),
            });
        }
        push_host(&file_host, &mut host_order);
        notes.extend(cx.notes.into_iter().map(|(file, line, message)| Note {
            file,
            line,
            message,
        }));
        out_files.extend(cx.files);
    }
    for p in &placed {
        push_host(&p.host, &mut host_order);
    }
    for h in &opts.hosts {
        if let HostArg::Services(n, svcs) = h {
            for s in svcs {
                if !placed.iter().any(|p| &p.plan.service == s) {
                    return Err(Error::Hosts(format!(
                        "{n}={}: no service {s:?}",
                        svcs.join(",")
                    )));
                }
            }
        }
    }
    // Groups: a service's own, or the one it is joined into.
    let mut group_of: HashMap<String, String> = HashMap::new();
    for (g, svcs) in &opts.joins {
        if !valid_name(g) {
            return Err(Error::Join(format!("{g:?} is not a group name")));
        }
        for s in svcs {
            if !placed.iter().any(|p| &p.plan.service == s) {
                return Err(Error::Join(format!(
                    "{g}={}: no service {s:?}",
                    svcs.join(",")
                )));
            }
            group_of.insert(s.clone(), g.clone());
        }
    }
    for p in &placed {
        if let Some(g) = &p.plan.x_group {
            group_of
                .entry(p.plan.service.clone())
                .or_insert_with(|| sanitize(g));
        }
    }
    let mut groups: Vec<(String, String, Vec<usize>)> = Vec::new();
    for (i, p) in placed.iter().enumerate() {
        let g = group_of
            .get(&p.plan.service)
            .cloned()
            .unwrap_or_else(|| sanitize(&p.plan.service));
        if sanitize(&p.plan.service) != p.plan.service && !group_of.contains_key(&p.plan.service) {
            notes.push(Note {
                file: p.file.clone(),
                line: p.plan.line,
                message: format!(
                    "services.{}: the group is named {g} (letters, digits, - and _ only)",
                    p.plan.service
                ),
            });
        }
        match groups.iter_mut().find(|x| x.0 == g) {
            Some(x) => {
                if x.1 != p.host {
                    notes.push(Note {
                        file: p.file.clone(),
                        line: p.plan.line,
                        message: format!(
                            "services.{}: joined into group {g} on host {}, not {}",
                            p.plan.service, x.1, p.host
                        ),
                    });
                }
                x.2.push(i);
            }
            None => groups.push((g, p.host.clone(), vec![i])),
        }
    }
    // Unique agent names across the system.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut agent_names: Vec<Vec<String>> = Vec::new();
    for p in &placed {
        let mut v = Vec::new();
        for a in &p.plan.agents {
            let mut n = a.name.clone();
            let count = seen.entry(n.to_ascii_lowercase()).or_insert(0);
            *count += 1;
            if *count > 1 {
                let base = n.clone();
                n = sanitize(&format!("{base}-{}", p.host));
                let mut k = 2;
                while seen.contains_key(&n.to_ascii_lowercase()) {
                    n = sanitize(&format!("{base}-{k}"));
                    k += 1;
                }
                seen.insert(n.to_ascii_lowercase(), 1);
                notes.push(Note {
                    file: p.file.clone(),
                    line: a.line,
                    message: format!("agent {base}: the name is taken; this one is {n}"),
                });
            }
            v.push(n);
        }
        agent_names.push(v);
    }
    let healthy_groups: Vec<&str> = groups
        .iter()
        .filter(|(_, _, m)| {
            m.iter()
                .all(|&i| placed[i].plan.agents.iter().all(|a| !a.health.is_empty()))
        })
        .map(|(g, _, _)| g.as_str())
        .collect();
    // The text.
    let mut o = Out::default();
    o.line(
        0,
        &format!(
            "# {}",
            comment(&format!(
                "Imported by `agent-supervisor import compose` from {}.",
                files
                    .iter()
                    .map(|f| f.0.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        ),
    );
    o.line(0, "# Edit the hosts' addresses (placeholders), then `agent-supervisor check THIS-FILE --host HOST`.");
    let mut body = Out::default();
    body.line(0, "version: 1");
    body.line(0, "hosts:");
    for (i, h) in host_order.iter().enumerate() {
        body.line(1, &format!("{}:", key(h)));
        body.line(
            2,
            &format!(
                "address: 192.0.2.{}   # placeholder (TEST-NET-1): this host's real address",
                i + 1
            ),
        );
        body.line(
            2,
            &format!("role: {}", if i == 0 { "primary" } else { "secondary" }),
        );
        // The daemon's /metrics port is 9000 by default: move it off an agent's port.
        let used: Vec<u16> = placed
            .iter()
            .filter(|p| &p.host == h)
            .flat_map(|p| p.plan.agents.iter().flat_map(|a| a.ports.iter().copied()))
            .collect();
        if used.contains(&9000) {
            let free = (9001..=65535u16)
                .find(|p| !used.contains(p))
                .unwrap_or(9000);
            body.line(2, &format!("daemon: {{http_listen: \"127.0.0.1:{free}\"}}   # an agent has port 9000, the default"));
            notes.push(Note { file: files[0].0.clone(), line: 0, message: format!("host {h}: an agent has port 9000, the daemon's default /metrics port; the daemon listens on 127.0.0.1:{free} there") });
        }
    }
    let host_note = Note { file: files[0].0.clone(), line: 0, message: format!("hosts {}: the addresses are placeholders (192.0.2.x); write the real ones; the first host is the primary", host_order.join(", ")) };
    notes.push(host_note);
    let images: Vec<(String, String)> = groups
        .iter()
        .flat_map(|(_, _, m)| m.iter().filter_map(|&i| placed[i].plan.image.clone()))
        .collect();
    if !images.is_empty() {
        body.line(0, "images:");
        let mut done: Vec<&str> = Vec::new();
        for (n, r) in &images {
            if !done.contains(&n.as_str()) {
                done.push(n);
                body.line(1, &format!("{}: {{recipe: {}}}", key(n), q(r)));
            }
        }
    }
    body.line(0, "groups:");
    for (gname, host, members) in &groups {
        let first = &placed[members[0]].plan;
        for c in &first.comments {
            body.line(1, &format!("# {}", comment(c)));
        }
        body.line(1, &format!("{}:", key(gname)));
        if members.len() > 1 {
            let svcs: Vec<&str> = members
                .iter()
                .map(|&i| placed[i].plan.service.as_str())
                .collect();
            body.line(
                2,
                &format!(
                    "# {}",
                    comment(&format!("services {} joined", svcs.join(", ")))
                ),
            );
        }
        body.line(2, &format!("host: {}", key(host)));
        if let Some((img, _)) = &first.image {
            body.line(2, &format!("image: {}", key(img)));
        }
        if let Some(n) = &first.network {
            body.line(2, &format!("network: {n}"));
        }
        if !first.resources.is_empty() {
            body.line(2, "resources:");
            for (k, v) in &first.resources {
                body.line(3, &format!("{k}: {v}"));
            }
        }
        if let Some(gp) = &first.gpus {
            body.line(2, &format!("gpus: {gp}"));
        }
        let mut deps: Vec<(String, String)> = Vec::new();
        for &i in members {
            let p = &placed[i];
            for (d, c, l) in &p.plan.depends {
                let Some(dg) = placed.iter().find(|x| &x.plan.service == d).map(|x| {
                    group_of
                        .get(d)
                        .cloned()
                        .unwrap_or_else(|| sanitize(&x.plan.service))
                }) else {
                    notes.push(Note {
                        file: p.file.clone(),
                        line: *l,
                        message: format!(
                            "services.{}.depends_on: no service {d:?}; left out",
                            p.plan.service
                        ),
                    });
                    continue;
                };
                if &dg == gname {
                    continue;
                }
                let mut c = c.clone();
                if c == "healthy" && !healthy_groups.contains(&dg.as_str()) {
                    notes.push(Note { file: p.file.clone(), line: *l, message: format!("services.{}.depends_on.{d}: service_healthy, but {d} has no healthcheck the import carried; waits for `started`", p.plan.service) });
                    c = "started".into();
                }
                if !deps.iter().any(|x| x.0 == dg) {
                    deps.push((dg, c));
                }
            }
        }
        if !deps.is_empty() {
            body.line(2, "depends_on:");
            for (d, c) in &deps {
                body.line(3, &format!("{}: {c}", key(d)));
            }
        }
        if !first.env.is_empty() {
            body.line(2, "env:");
            for (k, v) in &first.env {
                body.line(3, &format!("{}: {}", q(k), q(v)));
            }
        }
        if let Some(f) = &first.env_file {
            body.line(2, &format!("env_file: {}", q(f)));
        }
        if !first.binds.is_empty() {
            body.line(2, "binds:");
            for b in &first.binds {
                body.line(3, &format!("- {}", q(b)));
            }
        }
        if let Some(t) = &first.stop_timeout {
            body.line(2, &format!("stop_timeout: {t}"));
        }
        if let Some(r) = &first.restart {
            body.line(2, &format!("restart: {r}"));
        }
        if !first.cap_add.is_empty()
            || !first.cap_drop.is_empty()
            || first.seccomp.is_some()
            || !first.rlimits.is_empty()
        {
            body.line(2, "security:");
            if !first.cap_add.is_empty() {
                body.line(3, &format!("cap_add: {}", flow(&first.cap_add)));
            }
            if !first.cap_drop.is_empty() {
                body.line(3, &format!("cap_drop: {}", flow(&first.cap_drop)));
            }
            if let Some(s) = &first.seccomp {
                body.line(3, &format!("seccomp: {s}"));
            }
            if !first.rlimits.is_empty() {
                body.line(3, "rlimits:");
                for (k, v) in &first.rlimits {
                    body.line(4, &format!("{k}: {v}"));
                }
            }
        }
        body.line(2, "agents:");
        for &i in members {
            let p = &placed[i];
            if i != members[0] {
                let differs = p.plan.image != first.image
                    || p.plan.network != first.network
                    || p.plan.resources != first.resources
                    || p.plan.gpus != first.gpus
                    || p.plan.binds != first.binds
                    || p.plan.restart != first.restart
                    || p.plan.env_file != first.env_file
                    || p.plan.cap_add != first.cap_add
                    || p.plan.cap_drop != first.cap_drop
                    || p.plan.rlimits != first.rlimits
                    || p.plan.stop_timeout != first.stop_timeout;
                if differs {
                    notes.push(Note { file: p.file.clone(), line: p.plan.line, message: format!("services.{}: joined into group {gname}; its group settings (image, network, resources, GPUs, volumes, restart, security, env_file, stop_grace_period) differ from {}'s, and the group keeps {}'s", p.plan.service, first.service, first.service) });
                }
            }
            for (ai, a) in p.plan.agents.iter().enumerate() {
                if let Some(c) = &a.comment {
                    body.line(3, &format!("# {}", comment(c)));
                }
                body.line(3, &format!("- name: {}", key(&agent_names[i][ai])));
                match &a.command {
                    Some(c) => {
                        body.line(4, &format!("command: {}   # {}", flow(c), a.command_from));
                    }
                    None => {
                        let msg = format!(
                            "{}: no command in the Compose file; set one in the system file",
                            agent_names[i][ai]
                        );
                        body.line(
                            4,
                            &format!(
                                "command: {}   # placeholder: set the real command",
                                flow(&[
                                    "/bin/sh".into(),
                                    "-c".into(),
                                    format!("echo {} >&2; exit 78", shell_words::quote(&msg))
                                ])
                            ),
                        );
                    }
                }
                if let Some(w) = &a.workdir {
                    body.line(4, &format!("workdir: {}", q(w)));
                }
                if let Some((first_port, rest)) = a.ports.split_first() {
                    body.line(4, &format!("port: {first_port}"));
                    if !rest.is_empty() {
                        let r: Vec<String> = rest.iter().map(|p| p.to_string()).collect();
                        body.line(4, &format!("ports: [{}]", r.join(", ")));
                    }
                }
                if i != members[0] && !p.plan.env.is_empty() {
                    body.line(4, "env:");
                    for (k, v) in &p.plan.env {
                        body.line(5, &format!("{}: {}", q(k), q(v)));
                    }
                }
                if !a.health.is_empty() {
                    body.line(4, "health:");
                    for h in &a.health {
                        body.line(5, h);
                    }
                }
                if let Some(s) = &a.stop_signal {
                    body.line(4, &format!("stop_signal: {}", q(s)));
                }
                if !a.publish.is_empty() {
                    body.line(4, "publish:");
                    for pb in &a.publish {
                        body.line(5, &format!("- {pb}"));
                    }
                }
            }
        }
    }
    if groups.is_empty() {
        body.line(1, "{}");
        body.text = body.text.replace("groups:\n  {}\n", "groups: {}\n");
    }
    let mut unique: Vec<Note> = Vec::new();
    for n in notes {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    let notes = unique;
    if notes.is_empty() {
        o.line(0, "# Everything was carried over.");
    } else {
        o.line(0, &format!("# Not carried over ({}):", notes.len()));
        for n in &notes {
            o.line(0, &format!("#   {}", comment(&n.to_string())));
        }
    }
    o.text.push_str(&body.text);
    Ok(Imported {
        system: o.text,
        files: out_files,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_files() {
        assert_eq!(
            host_from_file(Path::new("a/docker-compose.mainpc.yml")),
            "mainpc"
        );
        assert_eq!(host_from_file(Path::new("compose.yaml")), "main");
        assert_eq!(host_from_file(Path::new("docker-compose.yml")), "main");
    }

    #[test]
    fn dotenv_lines() {
        assert_eq!(
            dotenv("# c\nA=1\nexport B=\"two\"\n\nC='3'\n"),
            [
                ("A".to_string(), "1".to_string()),
                ("B".into(), "two".into()),
                ("C".into(), "3".into())
            ]
        );
    }
}
