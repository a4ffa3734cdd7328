//! `.dockerignore` rules: which paths of a build context are left out.
//!
//! Semantics follow Docker's (moby `patternmatcher`): one pattern per line, `#` comments, `!`
//! re-includes, patterns are relative to the context root (a leading `/` is ignored and
//! `a/../b` is cleaned), `*` and `?` do not cross `/`, `**` matches any number of directories,
//! `[...]` classes and `\` escapes; a path is excluded when the last pattern matching it or one
//! of its parent directories is not negated. Unlike `.gitignore`, `foo` only matches the
//! top-level `foo` (write `**/foo` for "anywhere").
//!
//! [`Ignore::can_prune`] says when a walk may skip an excluded directory without reading it:
//! always, unless some `!` pattern could match a path below it.

use regex::Regex;

/// One pattern line.
#[derive(Debug, Clone)]
struct Pattern {
    negated: bool,
    /// The whole pattern, anchored.
    full: Regex,
    /// One matcher per `/`-separated component; `None` is `**`.
    comps: Vec<Option<Regex>>,
}

/// A set of ignore rules.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

/// A pattern that does not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name}:{line}: bad ignore pattern {pattern:?}: {message}")]
pub struct IgnoreError {
    pub source_name: String,
    pub line: usize,
    pub pattern: String,
    pub message: String,
}

impl Ignore {
    /// Adds the lines of an ignore file; `source_name` names it in errors.
    pub fn add_lines(&mut self, source_name: &str, text: &str) -> Result<(), IgnoreError> {
        for (i, raw) in text.lines().enumerate() {
            self.add(raw).map_err(|e| IgnoreError {
                source_name: source_name.to_string(),
                line: i + 1,
                pattern: raw.to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Adds one pattern line (comments and blank lines are accepted and do nothing).
    pub fn add(&mut self, raw: &str) -> Result<(), regex::Error> {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let (negated, pat) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        let cleaned = clean(pat);
        if cleaned.is_empty() {
            return Ok(());
        }
        let full = Regex::new(&format!("^{}$", glob_to_regex(&cleaned)))?;
        let comps = cleaned
            .split('/')
            .map(|c| {
                if c == "**" {
                    Ok(None)
                } else {
                    Regex::new(&format!("^{}$", glob_to_regex(c))).map(Some)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.patterns.push(Pattern {
            negated,
            full,
            comps,
        });
        Ok(())
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel` (context-relative, `/`-separated, no leading `/`) is excluded.
    pub fn is_excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            if p.full.is_match(rel) || parents(rel).any(|parent| p.full.is_match(parent)) {
                excluded = !p.negated;
            }
        }
        excluded
    }

    /// Whether an excluded directory `rel` can be skipped unread: no `!` pattern can match a
    /// path below it.
    pub fn can_prune(&self, rel: &str) -> bool {
        let dir: Vec<&str> = rel.split('/').collect();
        !self
            .patterns
            .iter()
            .filter(|p| p.negated)
            .any(|p| could_match_below(&p.comps, &dir))
    }
}

/// Whether a pattern (by components) could match some path strictly below `dir`.
fn could_match_below(comps: &[Option<Regex>], dir: &[&str]) -> bool {
    for (i, d) in dir.iter().enumerate() {
        match comps.get(i) {
            None => return false,
            Some(None) => return true,
            Some(Some(re)) if !re.is_match(d) => return false,
            Some(Some(_)) => {}
        }
    }
    comps.len() > dir.len()
}

/// The proper parent paths of `rel`: `a/b/c` gives `a`, `a/b`.
fn parents(rel: &str) -> impl Iterator<Item = &str> {
    rel.match_indices('/').map(move |(i, _)| &rel[..i])
}

/// Like Go's `filepath.Clean`, then without a leading `/` or `./`.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// Translates a Docker glob into a regex body (moby's rules).
fn glob_to_regex(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                if chars.get(i + 1) == Some(&'/') {
                    i += 1;
                    re.push_str("(.*/)?");
                } else {
                    re.push_str(".*");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                // A class: copied up to its `]`, `!` negation translated.
                let mut j = i + 1;
                let mut class = String::from("[");
                if chars.get(j) == Some(&'!') || chars.get(j) == Some(&'^') {
                    class.push('^');
                    j += 1;
                }
                let mut closed = false;
                while j < chars.len() {
                    match chars[j] {
                        ']' => {
                            closed = true;
                            break;
                        }
                        '\\' if j + 1 < chars.len() => {
                            class.push_str(&regex::escape(&chars[j + 1].to_string()));
                            j += 1;
                        }
                        ch => class.push_str(&regex::escape(&ch.to_string())),
                    }
                    j += 1;
                }
                if closed {
                    re.push_str(&class);
                    re.push(']');
                    i = j;
                } else {
                    re.push_str("\\[");
                }
            }
            '\\' if i + 1 < chars.len() => {
                i += 1;
                re.push_str(&regex::escape(&chars[i].to_string()));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Ignore {
        let mut i = Ignore::default();
        i.add_lines(".dockerignore", text).unwrap();
        i
    }

    #[test]
    fn docker_semantics() {
        let r = rules("# comment\n/data\n*.log\n**/__pycache__\nmodels/*\n!models/keep.txt\n");
        assert!(r.is_excluded("data"));
        assert!(r.is_excluded("data/x/y"), "parents match");
        assert!(
            !r.is_excluded("sub/data"),
            "anchored at the root, unlike gitignore"
        );
        assert!(r.is_excluded("a.log"));
        assert!(!r.is_excluded("sub/a.log"), "* does not cross /");
        assert!(r.is_excluded("a/b/__pycache__/x.pyc"));
        assert!(r.is_excluded("models/big.bin"));
        assert!(!r.is_excluded("models/keep.txt"));
        assert!(!r.is_excluded("models"));
        assert!(r.can_prune("data"));
        assert!(r.can_prune("a/__pycache__"));
        let r = rules("models\n!models/keep.txt\n");
        assert!(r.is_excluded("models"));
        assert!(!r.can_prune("models"), "a ! pattern reaches below");
        assert!(r.is_excluded("models/other"));
        assert!(!r.is_excluded("models/keep.txt"));
        let r = rules("big\n!**/*.py\n");
        assert!(!r.can_prune("big"));
        let r = rules("a?c\n[xy]z\n\\*lit\n");
        assert!(r.is_excluded("abc") && !r.is_excluded("a/c"));
        assert!(r.is_excluded("xz") && !r.is_excluded("wz"));
        assert!(r.is_excluded("*lit") && !r.is_excluded("alit"));
        let r = rules("**\n!src\n");
        assert!(r.is_excluded("x/y"));
        assert!(!r.is_excluded("src/a.py"));
    }
}
