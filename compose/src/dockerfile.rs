//! A small Dockerfile parser: line continuations, `#` comments and parser directives, JSON
//! (exec) and shell forms, `ARG`/`ENV` substitution; heredocs are reported as unsupported.

/// One instruction of a Dockerfile, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    /// Upper-cased keyword: `FROM`, `RUN`, `COPY`, ...
    pub keyword: String,
    /// `--name=value` flags written before the arguments (`COPY --chown=app`, `FROM --platform`).
    pub flags: Vec<(String, String)>,
    /// The arguments as written (after the flags), continuation lines joined.
    pub args: String,
}

/// An argument list: the JSON (exec) form or the shell form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Exec(Vec<String>),
    Shell(String),
}

impl Form {
    /// The argv Docker runs: the exec form as it is, the shell form under `/bin/sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Form::Exec(v) => v.clone(),
            Form::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        }
    }
}

/// A problem of a Dockerfile, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// Splits a Dockerfile into instructions. Problems (heredocs, a line that is no instruction)
/// are returned beside them; the parser never fails.
pub fn parse(text: &str) -> (Vec<Instruction>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut escape = '\\';
    let mut directives_open = true;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let start = i + 1;
        i += 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            directives_open = false;
            continue;
        }
        if let Some(c) = trimmed.strip_prefix('#') {
            if directives_open {
                if let Some((k, v)) = c.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("escape") {
                        escape = v.trim().chars().next().unwrap_or('\\');
                    }
                    continue;
                }
            }
            directives_open = false;
            continue;
        }
        directives_open = false;
        // Join continuation lines (comment lines inside are dropped, as Docker does).
        let mut joined = String::new();
        let mut cur = raw.trim_end().to_string();
        loop {
            if cur.ends_with(escape) {
                cur.pop();
                joined.push_str(&cur);
                // Next non-comment line continues.
                let mut next = None;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    if l.trim_start().starts_with('#') {
                        continue;
                    }
                    next = Some(l.trim_end().to_string());
                    break;
                }
                match next {
                    Some(n) => cur = n,
                    None => break,
                }
            } else {
                joined.push_str(&cur);
                break;
            }
        }
        let joined = joined.trim();
        let (kw, rest) = match joined.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim_start()),
            None => (joined, ""),
        };
        if !kw.chars().all(|c| c.is_ascii_alphabetic()) {
            problems.push(Problem {
                line: start,
                message: format!("{kw:?} is not a Dockerfile instruction"),
            });
            continue;
        }
        let mut rest = rest;
        let mut flags = Vec::new();
        while let Some(f) = rest.strip_prefix("--") {
            let (flag, after) = match f.split_once(char::is_whitespace) {
                Some((a, b)) => (a, b.trim_start()),
                None => (f, ""),
            };
            let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
            flags.push((k.to_string(), v.to_string()));
            rest = after;
        }
        if let Some(pos) = rest.find("<<") {
            let after = &rest[pos + 2..];
            let word = after
                .trim_start_matches('-')
                .trim_matches(|c| c == '"' || c == '\'');
            if word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && !kw.eq_ignore_ascii_case("ENV")
                && !kw.eq_ignore_ascii_case("LABEL")
            {
                let end: String = word
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                problems.push(Problem {
                    line: start,
                    message: format!(
                        "{}: heredocs (<<{end}) are not supported; write the file and COPY it",
                        kw.to_ascii_uppercase()
                    ),
                });
                // Skip the heredoc body.
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    if l.trim() == end {
                        break;
                    }
                }
                continue;
            }
        }
        out.push(Instruction {
            line: start,
            keyword: kw.to_ascii_uppercase(),
            flags,
            args: rest.to_string(),
        });
    }
    (out, problems)
}

/// Reads an argument list: a JSON array of strings is the exec form, anything else the
/// shell form.
pub fn form(args: &str) -> Form {
    let t = args.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return Form::Exec(v);
        }
    }
    Form::Shell(t.to_string())
}

/// Reads `ENV`/`LABEL`/`ARG` pairs: `K=V K2="v 2"` or the old `K V` form (one pair).
pub fn pairs(args: &str, old_form: bool) -> Vec<(String, Option<String>)> {
    let t = args.trim();
    let first = t.split_whitespace().next().unwrap_or("");
    if old_form && !first.contains('=') {
        let (k, v) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        return vec![(k.to_string(), Some(v.trim().to_string()))];
    }
    let words =
        shell_words::split(t).unwrap_or_else(|_| t.split_whitespace().map(String::from).collect());
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
        .collect()
}

/// Substitutes `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}` from `vars`; an unknown
/// variable becomes empty (as Docker does). `\$` stays a literal `$`.
pub fn substitute(s: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            if let Some(close) = chars[i + 2..].iter().position(|&c| c == '}') {
                let inner: String = chars[i + 2..i + 2 + close].iter().collect();
                i += close + 3;
                let (name, op, word) = if let Some((n, w)) = inner.split_once(":-") {
                    (n.to_string(), "-", w.to_string())
                } else if let Some((n, w)) = inner.split_once(":+") {
                    (n.to_string(), "+", w.to_string())
                } else {
                    (inner.clone(), "", String::new())
                };
                let v = vars(&name).filter(|v| !v.is_empty());
                match (op, v) {
                    ("-", None) => out.push_str(&word),
                    ("+", Some(_)) => out.push_str(&word),
                    ("+", None) => {}
                    (_, Some(v)) => out.push_str(&v),
                    (_, None) => {}
                }
                continue;
            }
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
        } else {
            i += 1 + name.chars().count();
            out.push_str(&vars(&name).unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_comments_and_forms() {
        let (ins, problems) = parse(
            "# syntax=docker/dockerfile:1\nFROM python:3.11-slim AS base\n# a comment\nRUN apt-get update \\\n  # inside\n  && apt-get install -y curl\nCMD [\"python3\", \"-m\", \"app\"]\nENTRYPOINT python3 run.py\ncopy --chown=app:app src /app\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let kws: Vec<&str> = ins.iter().map(|i| i.keyword.as_str()).collect();
        assert_eq!(kws, ["FROM", "RUN", "CMD", "ENTRYPOINT", "COPY"]);
        assert_eq!(ins[1].line, 4);
        assert_eq!(ins[1].args, "apt-get update   && apt-get install -y curl");
        assert_eq!(
            form(&ins[2].args),
            Form::Exec(vec!["python3".into(), "-m".into(), "app".into()])
        );
        assert_eq!(
            form(&ins[3].args).argv(),
            ["/bin/sh", "-c", "python3 run.py"]
        );
        assert_eq!(ins[4].flags, [("chown".to_string(), "app:app".to_string())]);
        assert_eq!(ins[4].args, "src /app");
        assert_eq!(ins[4].line, 9);
    }

    #[test]
    fn heredocs_are_reported_and_skipped() {
        let (ins, problems) = parse("FROM scratch\nRUN <<EOF\necho hi\nEOF\nCMD [\"x\"]\n");
        assert_eq!(ins.len(), 2);
        assert_eq!(ins[1].keyword, "CMD");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].message.contains("heredoc"), "{problems:?}");
    }

    #[test]
    fn escape_directive_and_bad_lines() {
        let (ins, problems) = parse("# escape=`\nFROM scratch\nRUN a `\n b\n1234 nonsense\n");
        assert_eq!(ins.len(), 2);
        assert_eq!(ins[1].args, "a  b");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 5);
    }

    #[test]
    fn env_pairs_both_forms() {
        assert_eq!(
            pairs("A=1 B=\"two words\" C", false),
            [
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), Some("two words".to_string())),
                ("C".to_string(), None)
            ]
        );
        assert_eq!(
            pairs("PATH /usr/bin:/bin", true),
            [("PATH".to_string(), Some("/usr/bin:/bin".to_string()))]
        );
    }

    #[test]
    fn substitution() {
        let vars = |n: &str| match n {
            "A" => Some("x".to_string()),
            "E" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            substitute("$A/${A}/${B:-d}/${E:-e}/${A:+p}/${B:+q}/\\$A/$", &vars),
            "x/x/d/e/p//$A/$"
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for t in [
            "\\",
            "RUN \\",
            "RUN <<",
            "RUN <<-'X'\n",
            "FROM\n\n#",
            "ENV",
            "${",
            "$",
        ] {
            let (ins, _) = parse(t);
            for i in ins {
                let _ = form(&i.args);
                let _ = pairs(&i.args, true);
                let _ = substitute(&i.args, &|_| None);
            }
            let _ = substitute(t, &|_| None);
        }
    }
}
