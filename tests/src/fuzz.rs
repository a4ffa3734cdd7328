//! Shared parts of the fuzz targets (`*/tests/fuzz*.rs`, `docs/fuzzing.md`): the time budget
//! (`FUZZ_SECS`) and a structure-aware mutator of seed files (real examples, the broken-input
//! corpus) driven by inputs bolero generates, so the fuzzed parsers get past their syntax layer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bolero::TypeGenerator;

/// How long each fuzz target runs: `FUZZ_SECS` (seconds, fractions allowed), else 2 s, so the
/// whole set stays within about a minute of CI. bolero's own `BOLERO_RANDOM_TEST_TIME_MS` or
/// `BOLERO_RANDOM_ITERATIONS`, when set, take precedence.
pub fn budget() -> Duration {
    let secs = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// One edit of a seed file, by line; every index is taken modulo what it indexes, so any
/// generated value is a valid edit.
#[derive(Debug, Clone, TypeGenerator)]
pub enum Edit {
    /// Replace what follows the first `: ` (or `- `) of a line with a dictionary word.
    Value { line: u16, word: u16 },
    /// Replace the key of a `key: value` line (its indentation kept) with a dictionary word.
    Key { line: u16, word: u16 },
    /// Delete a line.
    Delete { line: u16 },
    /// Copy a line to another place.
    Duplicate { line: u16, to: u16 },
    /// Copy a line of another seed in.
    Splice { seed: u16, line: u16, to: u16 },
    /// Indent a line more (positive) or less (negative), by spaces.
    Indent { line: u16, by: i8 },
    /// Insert a dictionary word at a byte offset.
    Insert { at: u16, word: u16 },
    /// Overwrite one byte with an ASCII one (so text stays UTF-8; arbitrary bytes are the
    /// byte-level targets' job).
    Byte { at: u16, byte: u8 },
    /// Cut the text at a byte offset.
    Truncate { at: u16 },
}

/// Seeds and a dictionary of words (tokens of the seeds plus the format's own).
#[derive(Debug, Clone)]
pub struct Mutator {
    seeds: Vec<Vec<u8>>,
    words: Vec<Vec<u8>>,
}

/// Words that break or stretch any YAML/JSON reader.
const YAML_WORDS: &[&str] = &[
    "",
    "~",
    "null",
    "true",
    "no",
    "0",
    "-1",
    "65536",
    "99999999999999999999999",
    "1e308",
    "-0.0",
    ".nan",
    "0x1F",
    "0o7",
    "\"\"",
    "''",
    "[]",
    "{}",
    "[",
    "{",
    "]",
    "}",
    "&a",
    "*a",
    "&a [1]",
    "*b",
    "!!str",
    "!!binary AAAA",
    "!custom",
    "<<: *a",
    "? x",
    "- ",
    ": ",
    "|",
    ">-",
    "#",
    "%YAML 1.2",
    "---",
    "...",
    "\t",
    "\\",
    "\"\\u0000\"",
    "\"\\uD800\"",
    "é",
    "\u{feff}",
    "\u{202e}",
    "..",
    "../../etc/passwd",
    "/",
    "/dev/null",
    "a:b:c:d",
    "x=y",
    "${X}",
    "$(id)",
    "%",
    "1KiB",
    "0s",
    "1ns",
    "10000000h",
    "18446744073709551616",
    "NaN",
    "[a, b]",
    "{a: 1}",
    "[[[[[[[[[[",
    "{{{{{{{{{{",
];

impl Mutator {
    /// A mutator over `seeds`; its dictionary is `extra`, [`YAML_WORDS`], and every word of
    /// the seeds (split at white space, `:`, `,` and brackets).
    pub fn new(seeds: Vec<Vec<u8>>, extra: &[&str]) -> Mutator {
        let mut words: Vec<Vec<u8>> = YAML_WORDS
            .iter()
            .chain(extra)
            .map(|w| w.as_bytes().to_vec())
            .collect();
        for s in &seeds {
            for w in s.split(|b| b" \t\n:,[]{}\"'".contains(b)) {
                if !w.is_empty() && w.len() < 64 && !words.iter().any(|x| x == w) {
                    words.push(w.to_vec());
                }
            }
        }
        Mutator { seeds, words }
    }

    /// A mutator over the files of `dir` whose names end in one of `exts`, plus `more`.
    pub fn from_dir(dir: &Path, exts: &[&str], more: Vec<Vec<u8>>, extra: &[&str]) -> Mutator {
        let mut seeds = more;
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .expect("read the seed directory")
            .map(|e| e.expect("read a seed directory entry").path())
            .filter(|p| {
                let name = p.to_string_lossy();
                exts.iter().any(|e| name.ends_with(e))
            })
            .collect();
        paths.sort();
        for p in paths {
            seeds.push(std::fs::read(&p).expect("read a seed file"));
        }
        assert!(!seeds.is_empty(), "no seed in {}", dir.display());
        Mutator::new(seeds, extra)
    }

    /// The seeds, unchanged.
    pub fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }

    /// Seed `seed` (modulo their number) with the first 3 `edits` applied in order (more
    /// would break the syntax of nearly every input).
    pub fn apply(&self, seed: u16, edits: &[Edit]) -> Vec<u8> {
        let base = &self.seeds[seed as usize % self.seeds.len()];
        let mut lines: Vec<Vec<u8>> = base.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        let word = |w: u16| self.words[w as usize % self.words.len()].clone();
        for e in edits.iter().take(3) {
            let n = lines.len().max(1);
            match e {
                Edit::Value { line, word: w } => {
                    if let Some(l) = lines.get_mut(*line as usize % n) {
                        let at = find(l, b": ")
                            .map(|i| i + 2)
                            .or_else(|| find(l, b"- ").map(|i| i + 2))
                            .unwrap_or(l.len());
                        l.truncate(at);
                        l.extend(word(*w));
                    }
                }
                Edit::Key { line, word: w } => {
                    if let Some(l) = lines.get_mut(*line as usize % n) {
                        let indent = l.iter().take_while(|b| **b == b' ' || **b == b'-').count();
                        let end = find(l, b":").filter(|e| *e >= indent).unwrap_or(indent);
                        let mut new = l[..indent].to_vec();
                        new.extend(word(*w));
                        new.extend_from_slice(&l[end..]);
                        *l = new;
                    }
                }
                Edit::Delete { line } => {
                    if !lines.is_empty() {
                        lines.remove(*line as usize % n);
                    }
                }
                Edit::Duplicate { line, to } => {
                    if let Some(l) = lines.get(*line as usize % n).cloned() {
                        lines.insert(*to as usize % (n + 1), l);
                    }
                }
                Edit::Splice { seed, line, to } => {
                    let other = &self.seeds[*seed as usize % self.seeds.len()];
                    let other: Vec<&[u8]> = other.split(|b| *b == b'\n').collect();
                    let l = other[*line as usize % other.len()].to_vec();
                    lines.insert((*to as usize % (n + 1)).min(lines.len()), l);
                }
                Edit::Indent { line, by } => {
                    if let Some(l) = lines.get_mut(*line as usize % n) {
                        let by = *by % 9;
                        if by >= 0 {
                            let mut new = vec![b' '; by as usize];
                            new.append(l);
                            *l = new;
                        } else {
                            let lead = l.iter().take_while(|b| **b == b' ').count();
                            l.drain(..lead.min(by.unsigned_abs() as usize));
                        }
                    }
                }
                Edit::Insert { at, word: w } => {
                    let mut text = lines.join(&b'\n');
                    let at = *at as usize % (text.len() + 1);
                    text.splice(at..at, word(*w));
                    lines = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                }
                Edit::Byte { at, byte } => {
                    let mut text = lines.join(&b'\n');
                    if !text.is_empty() {
                        let at = *at as usize % text.len();
                        text[at] = *byte & 0x7f;
                    }
                    lines = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                }
                Edit::Truncate { at } => {
                    let mut text = lines.join(&b'\n');
                    text.truncate(*at as usize % (text.len() + 1));
                    lines = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                }
            }
        }
        lines.join(&b'\n')
    }
}

/// The seeds of the system-file targets (`config`, `plan`): the example
/// `examples/ai-system/system.yaml` first, then the broken-input corpus
/// (`supervisor/tests/corpus/*.yaml`) in name order, each with its path (relative paths in a
/// seed resolve against it), and a mutator over them with the system file's keywords.
pub fn system_file_seeds(workspace: &Path) -> (Mutator, Vec<PathBuf>) {
    let example = workspace.join("examples/ai-system/system.yaml");
    let corpus = workspace.join("supervisor/tests/corpus");
    let mut paths = vec![example];
    let mut more: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("read the corpus")
        .map(|e| e.expect("read a corpus entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    more.sort();
    paths.extend(more);
    let bytes = paths
        .iter()
        .map(|p| std::fs::read(p).expect("read a seed"))
        .collect();
    let words = [
        "hosts",
        "groups",
        "agents",
        "images",
        "daemon",
        "host",
        "name",
        "command",
        "port",
        "restart",
        "always",
        "on-failure",
        "health",
        "depends_on",
        "healthy",
        "started",
        "env",
        "env_file",
        "binds",
        "gpus",
        "network",
        "private",
        "publish",
        "bridge",
        "address",
        "limits",
        "memory",
        "cpus",
        "image",
        "rootfs",
        "security",
        "seccomp",
        "version",
        "10.88.0.0/16",
        "127.0.0.1:9000",
        "1.2.3.4",
        "a:b:ro",
        "512MiB",
        "1.5",
        "30s",
    ];
    (Mutator::new(bytes, &words), paths)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs `check` on `input`; when it panics, first writes `input` to
/// `$FUZZ_FAILURES/<target>` (default: `<temp dir>/agent-supervisor-fuzz-failures/`), the
/// last failing input of a target being the shrunk one bolero reports, ready to be checked
/// in as a regression file.
pub fn keep_on_panic<T>(target: &str, input: &[u8], check: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        Ok(v) => v,
        Err(e) => {
            let dir = std::env::var_os("FUZZ_FAILURES").map_or_else(
                || std::env::temp_dir().join("agent-supervisor-fuzz-failures"),
                PathBuf::from,
            );
            let path = dir.join(target);
            if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&path, input).is_ok() {
                eprintln!("fuzz {target}: the failing input is in {}", path.display());
            }
            std::panic::resume_unwind(e)
        }
    }
}

/// Every file of the directory `dir` (for checked-in regression inputs), sorted by name;
/// none when it does not exist.
pub fn regression_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = rd
        .map(|e| e.expect("read a regression directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read a regression input");
            (p.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// Counts of what a target's inputs did (`loaded`, `error`, ...), printed when it ends
/// (`cargo test -- --nocapture` shows them), so a long session says how much it tried.
#[derive(Debug, Default)]
pub struct Tally {
    name: &'static str,
    counts: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Tally {
    pub fn new(name: &'static str) -> Tally {
        Tally {
            name,
            counts: Default::default(),
        }
    }

    /// Counts one input under `label`.
    pub fn hit(&self, label: &'static str) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry(label).or_default() += 1;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let total: u64 = c.values().sum();
        eprintln!("fuzz {}: {total} inputs {c:?}", self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_change_the_seed_and_keep_its_words() {
        let m = Mutator::new(vec![b"a:\n  b: 1\n  c: [x]\n".to_vec()], &["ZZ"]);
        assert_eq!(m.apply(0, &[]), b"a:\n  b: 1\n  c: [x]\n".to_vec());
        let zz = m.words.iter().position(|w| w == b"ZZ").expect("extra word") as u16;
        assert_eq!(
            m.apply(0, &[Edit::Value { line: 1, word: zz }]),
            b"a:\n  b: ZZ\n  c: [x]\n".to_vec()
        );
        assert_eq!(
            m.apply(0, &[Edit::Key { line: 2, word: zz }]),
            b"a:\n  b: 1\n  ZZ: [x]\n".to_vec()
        );
        assert_eq!(m.apply(0, &[Edit::Truncate { at: 2 }]), b"a:".to_vec());
        assert!(
            m.words.iter().any(|w| w == b"x"),
            "seed words are in the dictionary"
        );
    }

    #[test]
    fn budget_reads_fuzz_secs_else_two_seconds() {
        // Only the default is checked: setting the variable would race other tests.
        if std::env::var_os("FUZZ_SECS").is_none() {
            assert_eq!(budget(), Duration::from_secs(2));
        }
    }
}
