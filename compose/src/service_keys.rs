//! The service keys with more to them than one value: environment, env files, dependencies,
//! health checks, restart policies, resource limits, GPUs, volumes and ulimits.

use agent_config::tree::Node;

use crate::emit::q;
use crate::recipe::flow;
use crate::service::{Ctx, GroupPlan};
use crate::values::{bytes, dur_text, duration_ms};
use crate::yaml::{entries, get, is_null, items, key_text, line, scalar, strings};

pub(crate) fn env_of(name: &str, v: &Node, cx: &mut Ctx, out: &mut Vec<(String, String)>) {
    let put = |k: String, val: String, out: &mut Vec<(String, String)>| {
        out.retain(|(ek, _)| *ek != k);
        out.push((k, val));
    };
    if let Some(es) = entries(v) {
        for e in es {
            let k = key_text(e);
            if is_null(&e.value) {
                cx.note(line(&e.key), format!("services.{name}: {k} has no value (Compose takes it from the shell); not carried"));
            } else if let Some(s) = scalar(&e.value) {
                put(k, s.to_string(), out);
            }
        }
    } else if let Some(list) = items(v).and_then(|_| strings(v)) {
        for (s, l) in list {
            match s.split_once('=') {
                Some((k, val)) => put(k.to_string(), val.to_string(), out),
                None => cx.note(l, format!("services.{name}: {s} has no value (Compose takes it from the shell); not carried")),
            }
        }
    } else {
        cx.note(
            line(v),
            format!("services.{name}: expected a list of KEY=VALUE or a mapping"),
        );
    }
}

pub(crate) fn env_file(name: &str, v: &Node, cx: &mut Ctx, g: &mut GroupPlan) {
    let mut paths: Vec<(String, usize)> = Vec::new();
    if let Some(list) = items(v) {
        for it in list {
            if let Some(s) = scalar(it) {
                paths.push((s.to_string(), line(it)));
            } else if let Some(p) = get(it, "path").and_then(scalar) {
                extra_keys(
                    cx,
                    it,
                    &["path", "required"],
                    &format!("services.{name}.env_file"),
                );
                if get(it, "required").and_then(scalar) == Some("false")
                    && (cx.read)(&cx.dir.join(p)).is_none()
                {
                    cx.note(line(it), format!("services.{name}.env_file: {p} (required: false) does not exist; left out"));
                    continue;
                }
                paths.push((p.to_string(), line(it)));
            }
        }
    } else if let Some(s) = scalar(v) {
        paths.push((s.to_string(), line(v)));
    }
    for (i, (p, l)) in paths.into_iter().enumerate() {
        if i == 0 {
            g.env_file = Some(cx.path_out(&p));
        } else {
            cx.note(l, format!("services.{name}.env_file: a group has one env_file; {p} is not carried (merge it into the first)"));
        }
    }
}

pub(crate) fn depends(name: &str, v: &Node, cx: &mut Ctx, g: &mut GroupPlan) {
    if let Some(es) = entries(v) {
        for e in es {
            let dep = key_text(e);
            let l = line(&e.key);
            let cond = get(&e.value, "condition")
                .and_then(scalar)
                .unwrap_or("service_started");
            let c = match cond {
                "service_started" => "started",
                "service_healthy" => "healthy",
                "service_completed_successfully" => {
                    cx.note(l, format!("services.{name}.depends_on.{dep}: service_completed_successfully has no equivalent; waits for `started`"));
                    "started"
                }
                other => {
                    cx.note(l, format!("services.{name}.depends_on.{dep}: unknown condition {other:?}; waits for `started`"));
                    "started"
                }
            };
            for x in entries(&e.value).unwrap_or_default() {
                let xk = key_text(x);
                if xk != "condition" {
                    cx.note(
                        line(&x.key),
                        format!("services.{name}.depends_on.{dep}.{xk}: not carried"),
                    );
                }
            }
            g.depends.push((dep, c.into(), l));
        }
    } else {
        for (d, l) in strings(v).unwrap_or_default() {
            g.depends.push((d, "started".into(), l));
        }
    }
}

pub(crate) fn healthcheck(name: &str, v: &Node, cx: &mut Ctx, h: &mut Vec<String>, off: &mut bool) {
    for e in entries(v).unwrap_or_default() {
        let k = key_text(e);
        let l = line(&e.key);
        let val = &e.value;
        match k.as_str() {
            "test" => {
                let list: Vec<String> = strings(val).unwrap_or_default().into_iter().map(|s| s.0).collect();
                let exec = match (scalar(val), list.first().map(String::as_str)) {
                    (Some(s), _) => Some(vec!["/bin/sh".into(), "-c".into(), s.to_string()]),
                    (None, Some("NONE")) => {
                        *off = true;
                        None
                    }
                    (None, Some("CMD")) => Some(list[1..].to_vec()),
                    (None, Some("CMD-SHELL")) => Some(vec!["/bin/sh".into(), "-c".into(), list[1..].join(" ")]),
                    _ => {
                        cx.note(l, format!("services.{name}.healthcheck.test: expected CMD, CMD-SHELL or NONE first"));
                        None
                    }
                };
                if let Some(x) = exec.filter(|x| !x.is_empty()) {
                    h.insert(0, format!("exec: {}", flow(&x)));
                }
            }
            "interval" | "timeout" | "start_period" => match scalar(val).and_then(duration_ms) {
                Some(ms) => h.push(format!("{k}: {}", dur_text(ms))),
                None => cx.note(l, format!("services.{name}.healthcheck.{k}: not a duration")),
            },
            "retries" => match scalar(val).and_then(|s| s.parse::<u32>().ok()) {
                Some(n) => h.push(format!("retries: {n}")),
                None => cx.note(l, format!("services.{name}.healthcheck.retries: not a number")),
            },
            "disable" => *off = scalar(val) == Some("true"),
            "start_interval" => cx.note(l, format!("services.{name}.healthcheck.start_interval: not carried (checks run every interval)")),
            other => cx.note(l, format!("services.{name}.healthcheck.{other}: unknown key, not carried")),
        }
    }
    if !*off && !h.iter().any(|l| l.starts_with("exec:")) {
        if !h.is_empty() {
            cx.note(line(v), format!("services.{name}.healthcheck: no test (the image's HEALTHCHECK is not known); no health check"));
        }
        h.clear();
    }
}

pub(crate) fn restart(name: &str, s: &str, l: usize, cx: &mut Ctx) -> Option<String> {
    Some(match s {
        "no" | "\"no\"" => "never".into(),
        "always" => "always".into(),
        "unless-stopped" => {
            cx.note(l, format!("services.{name}.restart: unless-stopped becomes always (a stopped agent stays stopped until started by supervisorctl)"));
            "always".into()
        }
        "on-failure" => "on-failure".into(),
        other => match other
            .strip_prefix("on-failure:")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(n) => format!("{{policy: on-failure, max_retries: {n}}}"),
            None => {
                cx.note(
                    l,
                    format!("services.{name}.restart: {other:?} is not a Compose restart policy"),
                );
                return None;
            }
        },
    })
}

pub(crate) fn set_memory(
    name: &str,
    key: &str,
    v: &Node,
    cx: &mut Ctx,
    g: &mut GroupPlan,
    field: &str,
) {
    match scalar(v).and_then(bytes) {
        Some(b) if field == "memory" && b < 4 << 20 => cx.note(
            line(v),
            format!("services.{name}.{key}: {b} bytes is below the 4M minimum; not carried"),
        ),
        Some(b) => {
            g.resources.retain(|(k, _)| k != field);
            g.resources.push((field.into(), b.to_string()));
        }
        None => cx.note(line(v), format!("services.{name}.{key}: not a size")),
    }
}

pub(crate) fn set_cpus(name: &str, v: &Node, cx: &mut Ctx, g: &mut GroupPlan) {
    match scalar(v).and_then(|s| s.parse::<f64>().ok()) {
        Some(c) if c > 0.0 => {
            g.resources.retain(|(k, _)| k != "cpus");
            g.resources.push(("cpus".into(), c.to_string()));
        }
        _ => cx.note(
            line(v),
            format!("services.{name}.cpus: not a positive number"),
        ),
    }
}

pub(crate) fn deploy(
    name: &str,
    v: &Node,
    cx: &mut Ctx,
    g: &mut GroupPlan,
    has_restart: &mut bool,
) {
    for e in entries(v).unwrap_or_default() {
        let k = key_text(e);
        let l = line(&e.key);
        match k.as_str() {
            "resources" => {
                for r in entries(&e.value).unwrap_or_default() {
                    let rk = key_text(r);
                    match rk.as_str() {
                        "limits" => {
                            for x in entries(&r.value).unwrap_or_default() {
                                match key_text(x).as_str() {
                                    "cpus" => set_cpus(name, &x.value, cx, g),
                                    "memory" => set_memory(name, "deploy.resources.limits.memory", &x.value, cx, g, "memory"),
                                    "pids" => match scalar(&x.value).and_then(|s| s.parse::<u64>().ok()) {
                                        Some(n) if n > 0 => g.resources.push(("pids".into(), n.to_string())),
                                        _ => cx.note(line(&x.key), format!("services.{name}.deploy.resources.limits.pids: not a positive number")),
                                    },
                                    other => cx.note(line(&x.key), format!("services.{name}.deploy.resources.limits.{other}: not carried")),
                                }
                            }
                        }
                        "reservations" => {
                            for x in entries(&r.value).unwrap_or_default() {
                                match key_text(x).as_str() {
                                    "devices" => gpus(name, &x.value, cx, g),
                                    other => cx.note(line(&x.key), format!("services.{name}.deploy.resources.reservations.{other}: reservations are not carried (limits are)")),
                                }
                            }
                        }
                        other => cx.note(
                            line(&r.key),
                            format!("services.{name}.deploy.resources.{other}: not carried"),
                        ),
                    }
                }
            }
            "restart_policy" => {
                extra_keys(
                    cx,
                    &e.value,
                    &["condition", "max_attempts", "delay", "window"],
                    &format!("services.{name}.deploy.restart_policy"),
                );
                let cond = get(&e.value, "condition").and_then(scalar).unwrap_or("any");
                let max = get(&e.value, "max_attempts")
                    .and_then(scalar)
                    .and_then(|s| s.parse::<u32>().ok());
                let policy = match cond {
                    "none" => "never",
                    "on-failure" => "on-failure",
                    _ => "always",
                };
                *has_restart = true;
                g.restart = Some(match max {
                    Some(n) => format!("{{policy: {policy}, max_retries: {n}}}"),
                    None => policy.into(),
                });
                for x in entries(&e.value).unwrap_or_default() {
                    let xk = key_text(x);
                    if xk == "delay" || xk == "window" {
                        cx.note(line(&x.key), format!("services.{name}.deploy.restart_policy.{xk}: not carried (restarts back off from 100ms to 30s)"));
                    }
                }
            }
            "replicas" => {
                if scalar(&e.value) != Some("1") {
                    cx.note(l, format!("services.{name}.deploy.replicas: one agent per port is imported; replicas are not carried"));
                }
            }
            other => cx.note(
                l,
                format!("services.{name}.deploy.{other}: not carried (no orchestrator)"),
            ),
        }
    }
}

pub(crate) fn gpus(name: &str, v: &Node, cx: &mut Ctx, g: &mut GroupPlan) {
    for d in items(v).unwrap_or(&[]) {
        let l = line(d);
        extra_keys(
            cx,
            d,
            &["driver", "count", "device_ids", "capabilities", "options"],
            &format!("services.{name}.deploy.resources.reservations.devices"),
        );
        let driver = get(d, "driver").and_then(scalar);
        let caps: Vec<String> = get(d, "capabilities")
            .and_then(strings)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.0)
            .collect();
        if driver.is_some_and(|x| x != "nvidia")
            || (!caps.is_empty() && !caps.iter().any(|c| c == "gpu"))
        {
            cx.note(l, format!("services.{name}.deploy.resources.reservations.devices: only NVIDIA GPUs (driver nvidia, capabilities [gpu]) are carried"));
            continue;
        }
        for c in &caps {
            if !matches!(c.as_str(), "gpu" | "compute" | "utility" | "nvidia") {
                cx.note(l, format!("services.{name}: GPU capability {c:?} is not carried (the group gets the driver's files for compute and utility)"));
            }
        }
        if get(d, "options").is_some() {
            cx.note(
                l,
                format!("services.{name}: GPU device options are not carried"),
            );
        }
        let devices = if let Some(ids) = get(d, "device_ids").and_then(strings) {
            let v: Vec<String> = ids
                .into_iter()
                .map(|(s, _)| if s.parse::<u32>().is_ok() { s } else { q(&s) })
                .collect();
            format!("[{}]", v.join(", "))
        } else {
            match get(d, "count").and_then(scalar) {
                Some("all") | None => "all".into(),
                Some(n) if n.parse::<u32>().is_ok() => n.to_string(),
                Some(n) => {
                    cx.note(
                        l,
                        format!(
                            "services.{name}: GPU count {n:?} is not a number or all; all GPUs"
                        ),
                    );
                    "all".into()
                }
            }
        };
        if g.gpus.is_some() {
            cx.note(
                l,
                format!("services.{name}: a second GPU reservation is not carried"),
            );
            continue;
        }
        g.gpus = Some(format!("{{devices: {devices}, optional: true}}"));
        cx.note(l, format!("services.{name}: the GPU reservation is carried as optional: true, so the group also runs (without GPU, and says so) where the GPUs are missing; remove `optional` to require them"));
    }
}

pub(crate) fn volumes(name: &str, v: &Node, cx: &mut Ctx, g: &mut GroupPlan) {
    for it in items(v).unwrap_or(&[]) {
        let l = line(it);
        let (source, target, ro, kind) = if let Some(s) = scalar(it) {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                [t] => {
                    cx.note(l, format!("services.{name}.volumes: the anonymous volume {t} is not carried (the path is in the image)"));
                    continue;
                }
                [s, t] => (s.to_string(), t.to_string(), false, None),
                [s, t, m] => (
                    s.to_string(),
                    t.to_string(),
                    m.split(',').any(|m| m == "ro"),
                    None,
                ),
                _ => {
                    cx.note(
                        l,
                        format!("services.{name}.volumes: {s:?} is not SOURCE:TARGET[:MODE]"),
                    );
                    continue;
                }
            }
        } else {
            let kind = get(it, "type")
                .and_then(scalar)
                .unwrap_or("volume")
                .to_string();
            let source = get(it, "source").and_then(scalar).unwrap_or("").to_string();
            let target = get(it, "target").and_then(scalar).unwrap_or("").to_string();
            let ro = get(it, "read_only").and_then(scalar) == Some("true");
            for x in entries(it).unwrap_or_default() {
                let xk = key_text(x);
                if !matches!(xk.as_str(), "type" | "source" | "target" | "read_only") {
                    cx.note(
                        line(&x.key),
                        format!("services.{name}.volumes.{xk}: not carried"),
                    );
                }
            }
            (source, target, ro, Some(kind))
        };
        let is_path = source.starts_with('/') || source.starts_with('.') || source.starts_with('~');
        match kind.as_deref() {
            Some("tmpfs") | Some("npipe") | Some("cluster") | Some("image") => {
                cx.note(
                    l,
                    format!(
                        "services.{name}.volumes: type {} is not carried",
                        kind.unwrap_or_default()
                    ),
                );
                continue;
            }
            _ => {}
        }
        if target.is_empty() || !target.starts_with('/') {
            cx.note(
                l,
                format!("services.{name}.volumes: the target {target:?} is not an absolute path"),
            );
            continue;
        }
        if source.is_empty() {
            cx.note(
                l,
                format!("services.{name}.volumes: the anonymous volume {target} is not carried"),
            );
            continue;
        }
        let src = if kind.as_deref() == Some("bind") || (kind.is_none() && is_path) {
            if source.starts_with('~') {
                cx.note(
                    l,
                    format!(
                        "services.{name}.volumes: {source}: `~` is not expanded; write the path"
                    ),
                );
                continue;
            }
            cx.path_out(&source)
        } else {
            let dir = format!("{}/volumes/{source}", agent_config::defaults::STATE_DIR);
            cx.note(l, format!("services.{name}.volumes: the named volume {source} is the directory {dir} (create it: mkdir -p {dir})"));
            dir
        };
        g.binds
            .push(format!("{src}:{target}:{}", if ro { "ro" } else { "rw" }));
    }
}

pub(crate) fn ulimits(name: &str, v: &Node, cx: &mut Ctx, g: &mut GroupPlan) {
    for e in entries(v).unwrap_or_default() {
        let k = key_text(e);
        let l = line(&e.key);
        let n = if let Some(s) = scalar(&e.value) {
            s.parse::<u64>().ok()
        } else {
            let soft = get(&e.value, "soft")
                .and_then(scalar)
                .and_then(|s| s.parse::<u64>().ok());
            let hard = get(&e.value, "hard")
                .and_then(scalar)
                .and_then(|s| s.parse::<u64>().ok());
            if soft != hard {
                cx.note(l, format!("services.{name}.ulimits.{k}: soft and hard differ; both become the hard value"));
            }
            hard.or(soft)
        };
        match n {
            Some(n) if ["nofile", "nproc", "core", "memlock", "stack", "as", "fsize", "cpu"].contains(&k.as_str()) => g.rlimits.push((k, n)),
            _ => cx.note(l, format!("services.{name}.ulimits.{k}: not carried (rlimits: nofile, nproc, core, memlock, stack, as, fsize, cpu)")),
        }
    }
}

/// Notes every key of mapping `n` that is not in `known`, at its line: `{what}.{key}`.
pub(crate) fn extra_keys(cx: &mut Ctx, n: &Node, known: &[&str], what: &str) {
    for e in entries(n).unwrap_or_default() {
        let k = key_text(e);
        if !known.contains(&k.as_str()) {
            cx.note(line(&e.key), format!("{what}.{k}: not carried"));
        }
    }
}
