//! A Dockerfile made into an image recipe (`docs/images.md`): what the recipe can say is
//! carried over, the rest becomes notes at the Dockerfile's lines.

use std::path::Path;

use indexmap::IndexMap;

use crate::dockerfile::{self, form, pairs, substitute, Form};
use crate::emit::q;

/// What an image built from a Dockerfile says about how its container runs.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: IndexMap<String, String>,
    pub user: Option<String>,
    pub expose: Vec<u16>,
    pub stop_signal: Option<String>,
}

/// A recipe made from a Dockerfile.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The recipe's YAML text.
    pub text: String,
    pub facts: ImageFacts,
    /// `(line, why)` of what the recipe cannot say.
    pub notes: Vec<(usize, String)>,
    /// The `docker-archive:` file the base needs, and the image it is made from.
    pub base_archive: Option<(String, String)>,
}

/// A file name for an image reference: `redis:7-alpine` → `redis-7-alpine`.
pub fn slug(image: &str) -> String {
    let s: String = image
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_string()
}

/// The base line of a recipe for a Compose `image:` or a Dockerfile `FROM`, and the archive
/// the user makes for it.
pub fn base_for(image: &str) -> (String, Option<(String, String)>) {
    if image == "scratch" {
        return ("scratch".into(), None);
    }
    let file = format!("{}.tar", slug(image));
    (
        format!("docker-archive:{file}"),
        Some((file, image.to_string())),
    )
}

/// Converts Dockerfile `text`; `args` are the Compose build args, `context_rel` the build
/// context relative to the recipe's directory, `ignore_file` an ignore file to name.
pub fn convert(
    text: &str,
    args: &IndexMap<String, Option<String>>,
    target: Option<&str>,
    context_rel: &str,
    ignore_file: Option<&str>,
) -> Converted {
    let (ins, problems) = dockerfile::parse(text);
    let mut notes: Vec<(usize, String)> =
        problems.into_iter().map(|p| (p.line, p.message)).collect();
    // Stages: the target's (or the last); earlier stages are notes.
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    let mut stage_start = froms.last().copied();
    if let Some(t) = target {
        let found = froms.iter().copied().find(|&n| {
            let w: Vec<&str> = ins[n].args.split_whitespace().collect();
            w.len() == 3 && w[1].eq_ignore_ascii_case("as") && w[2] == t
        });
        match found {
            Some(n) => stage_start = Some(n),
            None => notes.push((
                0,
                format!("build target {t:?}: no stage of that name; the last stage is used"),
            )),
        }
    }
    let mut vars: IndexMap<String, String> = IndexMap::new();
    // ARGs before the first FROM are global.
    let first_from = froms.first().copied().unwrap_or(ins.len());
    let arg_value = |k: &str, default: Option<String>| -> Option<String> {
        match args.get(k) {
            Some(Some(v)) => Some(v.clone()),
            _ => default,
        }
    };
    for i in &ins[..first_from] {
        if i.keyword == "ARG" {
            for (k, d) in pairs(&i.args, false) {
                if let Some(v) = arg_value(&k, d) {
                    vars.insert(k, v);
                }
            }
        } else {
            notes.push((
                i.line,
                format!("{}: before the first FROM; ignored", i.keyword),
            ));
        }
    }
    let mut facts = ImageFacts::default();
    let mut base = "scratch".to_string();
    let mut base_archive = None;
    let mut steps: Vec<String> = Vec::new();
    let mut user_line: Option<usize> = None;
    let mut workdir = String::from("/");
    let Some(start) = stage_start else {
        notes.push((
            1,
            "no FROM instruction; the recipe starts from scratch".into(),
        ));
        return finish(
            base,
            base_archive,
            context_rel,
            ignore_file,
            steps,
            facts,
            notes,
        );
    };
    for n in &froms {
        if *n < start {
            notes.push((ins[*n].line, "an earlier build stage: only the final stage becomes the recipe (COPY --from it is not carried)".into()));
        }
    }
    let end = froms
        .iter()
        .copied()
        .find(|&n| n > start)
        .unwrap_or(ins.len());
    for i in &ins[start..end] {
        let lookup = |k: &str| vars.get(k).cloned().or_else(|| facts.env.get(k).cloned());
        let a = substitute(&i.args, &lookup);
        let l = i.line;
        for (f, _) in &i.flags {
            if !(i.keyword == "FROM" && f == "platform") && f != "from" {
                notes.push((
                    l,
                    format!(
                        "{} --{f}: not carried (files are owned by root, layers are plain)",
                        i.keyword
                    ),
                ));
            }
        }
        match i.keyword.as_str() {
            "FROM" => {
                let image = a.split_whitespace().next().unwrap_or("scratch").to_string();
                let (b, arch) = base_for(&image);
                if let Some((file, img)) = &arch {
                    notes.push((l, format!("FROM {img}: the base is docker-archive:{file} beside the recipe (images/{file}); make it with `skopeo copy docker://{img} docker-archive:images/{file}:{img}` (or `docker save {img} -o images/{file}`)")));
                }
                base = b;
                base_archive = arch;
            }
            "ARG" => {
                for (k, d) in pairs(&a, false) {
                    if let Some(v) = arg_value(&k, d).or_else(|| vars.get(&k).cloned()) {
                        vars.insert(k, v);
                    }
                }
            }
            "ENV" => {
                let mut m = IndexMap::new();
                for (k, v) in pairs(&a, true) {
                    let v = v.unwrap_or_default();
                    facts.env.insert(k.clone(), v.clone());
                    m.insert(k, v);
                }
                let body: Vec<String> = m.iter().map(|(k, v)| format!("{}: {}", q(k), q(v))).collect();
                steps.push(format!("env: {{{}}}", body.join(", ")));
            }
            "COPY" | "ADD" => {
                if let Some((_, stage)) = i.flags.iter().find(|(f, _)| f == "from") {
                    notes.push((l, format!("{} --from={stage}: copies out of another stage or image; not carried (copy the built files into the context)", i.keyword)));
                    continue;
                }
                let words = match form(&a) {
                    Form::Exec(v) => v,
                    Form::Shell(s) => shell_words::split(&s).unwrap_or_default(),
                };
                if words.len() < 2 {
                    notes.push((l, format!("{}: needs a source and a destination", i.keyword)));
                    continue;
                }
                let (srcs, dst) = words.split_at(words.len() - 1);
                let mut dst = dst[0].clone();
                if !dst.starts_with('/') {
                    let d = dst.trim_start_matches("./");
                    let d = if d == "." { "" } else { d };
                    dst = format!("{}/{}", workdir.trim_end_matches('/'), d);
                }
                if srcs.len() > 1 && !dst.ends_with('/') {
                    dst.push('/');
                }
                for s in srcs {
                    if i.keyword == "ADD" && (s.contains("://") || s.starts_with("git@")) {
                        notes.push((l, format!("ADD {s}: remote sources are not carried; download the file into the context and COPY it")));
                        continue;
                    }
                    if s.contains(['*', '?', '[']) {
                        notes.push((l, format!("{} {s}: wildcards are not carried; name the files", i.keyword)));
                        continue;
                    }
                    if i.keyword == "ADD" && [".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2"].iter().any(|e| s.ends_with(e)) {
                        notes.push((l, format!("ADD {s}: the archive is copied as a file, not unpacked")));
                    }
                    let src = s.trim_start_matches("./");
                    let src = if src.is_empty() { "." } else { src };
                    steps.push(format!("copy: {{src: {}, dst: {}}}", q(src), q(&dst)));
                }
            }
            "RUN" => {
                if user_line.is_some() {
                    notes.push((l, "RUN after USER: the recipe's run steps run as root; move USER after them".into()));
                }
                let argv = form(&a).argv();
                steps.push(format!("run: {}", flow(&argv)));
            }
            "WORKDIR" => {
                let w = if a.starts_with('/') { a.clone() } else { format!("{}/{}", workdir.trim_end_matches('/'), a) };
                workdir = w.clone();
                facts.workdir = Some(w.clone());
                steps.push(format!("workdir: {}", q(&w)));
            }
            "USER" => {
                user_line = Some(l);
                facts.user = Some(a.clone());
                steps.push(format!("user: {}", q(&a)));
            }
            "ENTRYPOINT" => {
                let argv = form(&a).argv();
                facts.entrypoint = Some(argv.clone());
                // Docker: a new ENTRYPOINT resets an inherited CMD.
                facts.cmd = None;
                steps.push(format!("entrypoint: {}", flow(&argv)));
            }
            "CMD" => {
                let argv = form(&a).argv();
                facts.cmd = Some(argv.clone());
                steps.push(format!("cmd: {}", flow(&argv)));
            }
            "EXPOSE" => {
                for p in a.split_whitespace() {
                    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    match num.parse::<u16>() {
                        Ok(n) if n > 0 && proto == "tcp" => facts.expose.push(n),
                        _ => notes.push((l, format!("EXPOSE {p}: only TCP ports are carried"))),
                    }
                }
            }
            "LABEL" => {
                let body: Vec<String> = pairs(&a, true)
                    .into_iter()
                    .map(|(k, v)| format!("{}: {}", q(&k), q(&v.unwrap_or_default())))
                    .collect();
                steps.push(format!("labels: {{{}}}", body.join(", ")));
            }
            "STOPSIGNAL" => facts.stop_signal = Some(a.clone()),
            "MAINTAINER" => {}
            "HEALTHCHECK" => notes.push((l, "HEALTHCHECK: not carried into the recipe; write a healthcheck in the Compose file (it becomes the agents' health)".into())),
            "SHELL" => notes.push((l, "SHELL: not carried; shell-form commands run under /bin/sh -c".into())),
            "VOLUME" => notes.push((l, "VOLUME: not carried; bind a directory in the Compose file's volumes".into())),
            "ONBUILD" => notes.push((l, "ONBUILD: not carried".into())),
            other => notes.push((l, format!("{other}: unknown instruction"))),
        }
    }
    finish(
        base,
        base_archive,
        context_rel,
        ignore_file,
        steps,
        facts,
        notes,
    )
}

fn finish(
    base: String,
    base_archive: Option<(String, String)>,
    context_rel: &str,
    ignore_file: Option<&str>,
    steps: Vec<String>,
    facts: ImageFacts,
    notes: Vec<(usize, String)>,
) -> Converted {
    let mut text = format!("base: {}\ncontext: {}\n", q(&base), q(context_rel));
    if let Some(f) = ignore_file {
        text.push_str(&format!("ignore_file: {}\n", q(f)));
    }
    if steps.is_empty() {
        text.push_str("steps: []\n");
    } else {
        text.push_str("steps:\n");
        for s in steps {
            text.push_str(&format!("  - {s}\n"));
        }
    }
    Converted {
        text,
        facts,
        notes,
        base_archive,
    }
}

/// A flow sequence of quoted strings.
pub fn flow(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

/// `path` relative to directory `from`, lexically (both absolute or both relative to the
/// same directory); `.` for the same directory.
pub fn relative(from: &Path, path: &Path) -> String {
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = path.components().collect();
    let common = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..a.len() {
        parts.push("..".into());
    }
    for c in &b[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerfile_becomes_a_recipe() {
        let mut args = IndexMap::new();
        args.insert("GROUP_NAME".to_string(), Some("gpu".to_string()));
        let c = convert(
            "ARG PY=3.11\nFROM python:${PY}-slim\nARG GROUP_NAME=none\nENV APP=/app GROUP=${GROUP_NAME}\nWORKDIR $APP\nCOPY requirements.txt ./\nRUN pip install -r requirements.txt\nCOPY agents common /app/\nEXPOSE 5572 5573/udp\nUSER app\nCMD [\"python3\", \"-m\", \"agents\"]\nVOLUME /data\n",
            &args,
            None,
            "../..",
            Some(".dockerignore"),
        );
        assert!(c.text.starts_with("base: \"docker-archive:python-3.11-slim.tar\"\ncontext: \"../..\"\nignore_file: \".dockerignore\"\n"), "{}", c.text);
        assert!(
            c.text
                .contains("env: {\"APP\": \"/app\", \"GROUP\": \"gpu\"}"),
            "{}",
            c.text
        );
        assert!(
            c.text
                .contains("copy: {src: \"requirements.txt\", dst: \"/app/\"}"),
            "{}",
            c.text
        );
        assert!(
            c.text.contains("copy: {src: \"agents\", dst: \"/app/\"}"),
            "{}",
            c.text
        );
        assert!(
            c.text
                .contains("run: [\"/bin/sh\", \"-c\", \"pip install -r requirements.txt\"]"),
            "{}",
            c.text
        );
        assert_eq!(
            c.facts.cmd,
            Some(vec!["python3".into(), "-m".into(), "agents".into()])
        );
        assert_eq!(c.facts.workdir.as_deref(), Some("/app"));
        assert_eq!(c.facts.expose, [5572]);
        assert_eq!(
            c.base_archive,
            Some(("python-3.11-slim.tar".into(), "python:3.11-slim".into()))
        );
        let lines: Vec<usize> = c.notes.iter().map(|n| n.0).collect();
        assert_eq!(lines, [2, 9, 12], "{:?}", c.notes);
    }

    #[test]
    fn multi_stage_uses_the_last_stage() {
        let c = convert("FROM golang AS build\nRUN go build\nFROM scratch\nCOPY --from=build /out /app\nENTRYPOINT [\"/app\"]\n", &IndexMap::new(), None, ".", None);
        assert!(c.text.starts_with("base: \"scratch\""), "{}", c.text);
        assert!(!c.text.contains("go build"), "{}", c.text);
        assert_eq!(c.facts.entrypoint, Some(vec!["/app".to_string()]));
        assert!(c.notes.iter().any(|n| n.0 == 1), "{:?}", c.notes);
        assert!(c.notes.iter().any(|n| n.0 == 4), "{:?}", c.notes);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/a/b"), Path::new("/a/c/d")), "../c/d");
        assert_eq!(relative(Path::new("/a"), Path::new("/a")), ".");
        assert_eq!(slug("redis:7-alpine"), "redis-7-alpine");
    }
}
